//! Reading secrets from a file, an environment variable or a hidden prompt — never from argv,
//! which every local user can read with `ps`.

use std::io::IsTerminal;
use std::path::Path;

use secrecy::SecretString;

use super::CliError;

/// Reads the secret named `what` from `file` or the variable `env`; `Ok(None)` when neither was given.
pub fn from_file_or_env(
    what: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<SecretString>, CliError> {
    let text = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(format!(
                "give the {what} as a file or an environment variable, not both"
            )));
        }
        (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the {what} from {}: {e}",
                path.display()
            ))
        })?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            CliError::Usage(format!(
                "environment variable {var} (for the {what}) is not set"
            ))
        })?,
        (None, None) => return Ok(None),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!("the {what} is empty")));
    }
    Ok(Some(SecretString::from(trimmed.to_string())))
}

/// Asks for a secret without echo when a person is at the terminal; `None` otherwise or when left empty.
pub fn prompt(question: &str) -> Result<Option<SecretString>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let answer = rpassword::prompt_password(question).map_err(|e| CliError::Failed(e.into()))?;
    let answer = answer.trim();
    Ok((!answer.is_empty()).then(|| SecretString::from(answer.to_string())))
}
