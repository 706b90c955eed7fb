//! `postern connection import FILE` and `export`: many connections at once, in JSON, CSV or
//! TOML. Import checks every row with the same rules as `connection add` and writes nothing
//! unless all of them pass; export writes a file import takes back (without secrets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::{CliError, CliResult, Ctx, secret_input};
use crate::domain::connection_file::{self, FileFormat, Row, SecretSource};
use crate::domain::{Connection, ConnectionInput};
use crate::store::ImportItem;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A .json, .csv or .toml file of connections (see `connection export` for the columns).
    file: PathBuf,
    /// Check every row and show what would be created or updated; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// json, csv or toml, when the file name's extension does not say.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// json (default), csv or toml.
    #[arg(long, default_value = "json")]
    format: String,
}

fn format_of(path: &Path, given: Option<&str>) -> Result<FileFormat, CliError> {
    match given {
        Some(f) => f.parse().map_err(CliError::Usage),
        None => FileFormat::from_extension(path).ok_or_else(|| {
            CliError::Usage(format!(
                "cannot tell the format of {} from its name: add --format json|csv|toml",
                path.display()
            ))
        }),
    }
}

/// Reads a row's secret; a relative file is found beside the import file, not in the current
/// directory, so a folder of files can be imported from anywhere.
fn read_secret(
    what: &str,
    source: Option<&SecretSource>,
    base: &Path,
) -> Result<Option<secrecy::SecretString>, CliError> {
    match source {
        None => Ok(None),
        Some(SecretSource::File(f)) => {
            let path = base.join(f);
            secret_input::from_file_or_env(what, Some(&path), None)
        }
        Some(SecretSource::Env(var)) => secret_input::from_file_or_env(what, None, Some(var)),
    }
}

/// One row checked: what it will write, or every reason it cannot.
fn check_row(
    row: &Row,
    existing: &HashMap<String, &Connection>,
    base: &Path,
) -> Result<(ImportItem, Vec<String>), Vec<String>> {
    let parsed = row.input()?;
    let mut errors = Vec::new();
    let current = parsed
        .input
        .name
        .as_deref()
        .map(str::trim)
        .and_then(|n| existing.get(n));
    let input = match current {
        // An update: blank or absent fields keep their value, as `connection edit` does.
        Some(c) => ConnectionInput::from_settings(&c.settings).overlay(parsed.input),
        None => parsed.input,
    };
    let validated = input.validate().map_err(|e| {
        e.0.iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
    });
    let mut secret = |what: &str, source: Option<&SecretSource>| {
        read_secret(what, source, base).unwrap_or_else(|e| {
            errors.push(match e {
                CliError::Usage(m) => m,
                other => other.to_string(),
            });
            None
        })
    };
    let client_secret = secret("client secret", parsed.client_secret.as_ref());
    let refresh_token = secret("refresh token", parsed.refresh_token.as_ref());
    match validated {
        Ok((settings, notices)) if errors.is_empty() => Ok((
            ImportItem {
                existing_id: current.map(|c| c.id),
                settings,
                client_secret,
                refresh_token,
            },
            notices.into_iter().map(|n| n.0).collect(),
        )),
        Ok(_) => Err(errors),
        Err(mut field_errors) => {
            field_errors.append(&mut errors);
            Err(field_errors)
        }
    }
}

pub async fn import(ctx: &Ctx, a: ImportArgs) -> CliResult {
    let started = Instant::now();
    let format = format_of(&a.file, a.format.as_deref())?;
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", a.file.display())))?;
    let rows = connection_file::parse(format, &text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.file.display())))?;
    let base = a.file.parent().unwrap_or(Path::new(".")).to_path_buf();

    let store = ctx.store().await?;
    let all = store.list_connections().await?;
    let existing: HashMap<String, &Connection> =
        all.iter().map(|c| (c.name().to_string(), c)).collect();

    let mut items = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for row in &rows {
        match check_row(row, &existing, &base) {
            Ok((item, notices)) => {
                let name = item.settings.name.to_string();
                if let Some(first) = seen.insert(name.clone(), row.label()) {
                    errors.push(format!(
                        "{}: name: `{name}` is already in {first}; each connection once",
                        row.label()
                    ));
                }
                notes.extend(notices.into_iter().map(|n| format!("{}: {n}", row.label())));
                items.push(item);
            }
            Err(row_errors) => errors.extend(
                row_errors
                    .into_iter()
                    .map(|e| format!("{}: {e}", row.label())),
            ),
        }
    }
    if !errors.is_empty() {
        let bad_rows = rows
            .iter()
            .filter(|r| {
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("{}:", r.label())))
            })
            .count();
        return Err(CliError::Usage(format!(
            "{}\nnothing was written: {bad_rows} of {} rows have errors; fix them and import again",
            errors.join("\n"),
            rows.len()
        )));
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    let (create, update): (Vec<&ImportItem>, Vec<&ImportItem>) =
        items.iter().partition(|i| i.existing_id.is_none());
    if a.dry_run {
        for (verb, list) in [("create", &create), ("update", &update)] {
            for i in list.iter() {
                println!(
                    "would {verb} {} ({} {})",
                    i.settings.name, i.settings.provider, i.settings.user
                );
            }
        }
        println!(
            "dry run: {} to create, {} to update; nothing was written.",
            create.len(),
            update.len()
        );
        return Ok(());
    }
    let counts = store.import_connections(&items).await?;
    println!(
        "imported {} connections from {}: {} created, {} updated ({:.2} s).",
        items.len(),
        a.file.display(),
        counts.created,
        counts.updated,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn export(ctx: &Ctx, a: ExportArgs) -> CliResult {
    let format: FileFormat = a.format.parse().map_err(CliError::Usage)?;
    let store = ctx.store().await?;
    let rows: Vec<_> = store
        .list_connections()
        .await?
        .iter()
        .map(|c| {
            connection_file::export_row(
                &ConnectionInput::from_settings(&c.settings),
                c.client_secret_set,
                c.refresh_token_set,
            )
        })
        .collect();
    let text = connection_file::render(format, &rows)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot write the {format} export: {e}")))?;
    print!("{text}");
    Ok(())
}
