//! Connection files for `connection import` / `export`: JSON, CSV or TOML rows holding the
//! fields of `connection add`, turned into [`ConnectionInput`]s and back. No I/O here.
//!
//! A row never holds a secret: it names where to read it (`client_secret_file`,
//! `client_secret_env`, `refresh_token_file`, `refresh_token_env`). Export writes
//! `client_secret` / `refresh_token` as `set` or `not set`; import accepts those two words back
//! (so an export imports unchanged) and refuses anything else there, without repeating it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::ConnectionInput;
use super::csv;

/// The three file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
    Toml,
}

impl FileFormat {
    /// The format a file name's extension says, if any.
    pub fn from_extension(path: &std::path::Path) -> Option<Self> {
        path.extension()?.to_str()?.parse().ok()
    }
}

impl FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(FileFormat::Json),
            "csv" => Ok(FileFormat::Csv),
            "toml" => Ok(FileFormat::Toml),
            other => Err(format!(
                "format `{other}` is not known: use json, csv or toml"
            )),
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Json => "json",
            FileFormat::Csv => "csv",
            FileFormat::Toml => "toml",
        })
    }
}

/// Where a row's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(String),
    Env(String),
}

/// One row of a file, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based position among the file's connections.
    pub number: usize,
    /// The line it starts on, when the format tells (CSV).
    pub line: Option<usize>,
    pub fields: BTreeMap<String, String>,
}

impl Row {
    /// How errors name this row: `row 17 (contoso)`, `row 17 (line 18, contoso)`.
    pub fn label(&self) -> String {
        let name = self.fields.get("name").map(String::as_str).unwrap_or("");
        let name = if name.is_empty() { "no name" } else { name };
        match self.line {
            Some(l) => format!("row {} (line {l}, {name})", self.number),
            None => format!("row {} ({name})", self.number),
        }
    }
}

/// A row ready to validate: the fields and where its secrets are.
#[derive(Debug, Clone)]
pub struct RowInput {
    pub input: ConnectionInput,
    pub client_secret: Option<SecretSource>,
    pub refresh_token: Option<SecretSource>,
}

/// Columns that say where a secret is, and the export's "is a secret set" columns.
const SECRET_COLUMNS: &[&str] = &[
    "client_secret_file",
    "client_secret_env",
    "refresh_token_file",
    "refresh_token_env",
];
const SECRET_SET_COLUMNS: &[&str] = &["client_secret", "refresh_token"];

/// Every row of `text` in `format`. A syntax error stops here, naming its place.
pub fn parse(format: FileFormat, text: &str) -> Result<Vec<Row>, String> {
    let rows = match format {
        FileFormat::Csv => {
            let mut records = csv::parse(text).map_err(|e| e.to_string())?.into_iter();
            let Some(header) = records.next() else {
                return Ok(Vec::new());
            };
            let header: Vec<String> = header.fields.iter().map(|h| h.trim().to_string()).collect();
            let mut rows = Vec::new();
            for (i, r) in records.enumerate() {
                if r.fields.len() > header.len() {
                    return Err(format!(
                        "line {}: {} fields, but the header names {} columns",
                        r.line,
                        r.fields.len(),
                        header.len()
                    ));
                }
                let fields = header.iter().cloned().zip(r.fields).collect();
                rows.push(Row {
                    number: i + 1,
                    line: Some(r.line),
                    fields,
                });
            }
            rows
        }
        FileFormat::Json => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let list = match v {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Object(mut o) => match o.remove("connections") {
                    Some(serde_json::Value::Array(a)) => a,
                    _ => return Err(NOT_A_LIST_JSON.into()),
                },
                _ => return Err(NOT_A_LIST_JSON.into()),
            };
            list.into_iter()
                .enumerate()
                .map(|(i, v)| json_row(i + 1, v))
                .collect::<Result<_, _>>()?
        }
        FileFormat::Toml => {
            let mut v: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
            let list = match v.remove("connection") {
                Some(toml::Value::Array(a)) => a,
                None => Vec::new(),
                Some(_) => return Err(NOT_A_LIST_TOML.into()),
            };
            if let Some(other) = v.keys().next() {
                return Err(format!("unknown key `{other}`: {NOT_A_LIST_TOML}"));
            }
            list.into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
                    json_row(i + 1, json)
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(rows)
}

const NOT_A_LIST_JSON: &str =
    "a JSON connection file is an array of objects, or {\"connections\": [...]}";
const NOT_A_LIST_TOML: &str =
    "a TOML connection file holds [[connection]] tables, one per connection";

fn json_row(number: usize, v: serde_json::Value) -> Result<Row, String> {
    let serde_json::Value::Object(o) = v else {
        return Err(format!(
            "row {number}: not an object with the connection's fields"
        ));
    };
    let mut fields = BTreeMap::new();
    for (k, v) in o {
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(format!(
                    "row {number}: `{k}` must be text, a number or true/false"
                ));
            }
        };
        fields.insert(k, text);
    }
    Ok(Row {
        number,
        line: None,
        fields,
    })
}

fn parse_bool(field: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{field}: `{v}` is not true or false")),
    }
}

fn secret_source(row: &Row, what: &str, errors: &mut Vec<String>) -> Option<SecretSource> {
    let get = |k: &str| {
        row.fields
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    match (get(&format!("{what}_file")), get(&format!("{what}_env"))) {
        (Some(_), Some(_)) => {
            errors.push(format!(
                "{what}_file and {what}_env: give one of them, not both"
            ));
            None
        }
        (Some(f), None) => Some(SecretSource::File(f.to_string())),
        (None, Some(e)) => Some(SecretSource::Env(e.to_string())),
        (None, None) => None,
    }
}

impl Row {
    /// The row as a [`ConnectionInput`] (blank means "not given") and its secret sources, or
    /// every problem found in it. Field values themselves are checked by `validate`.
    pub fn input(&self) -> Result<RowInput, Vec<String>> {
        let mut errors = Vec::new();
        let client_secret = secret_source(self, "client_secret", &mut errors);
        let refresh_token = secret_source(self, "refresh_token", &mut errors);
        let mut fields = serde_json::Map::new();
        for (k, v) in &self.fields {
            let v = v.trim();
            if SECRET_COLUMNS.contains(&k.as_str()) || v.is_empty() {
                continue;
            }
            if SECRET_SET_COLUMNS.contains(&k.as_str()) {
                // Never echo the value: it may be the secret pasted in by mistake.
                if !matches!(v, "set" | "not set") {
                    errors.push(format!(
                        "{k}: secrets are never written in the file; name a file with {k}_file \
                         or an environment variable with {k}_env (this column may only say \
                         `set` or `not set`, as export writes it)"
                    ));
                }
                continue;
            }
            let value = if k == "enabled" {
                match parse_bool(k, v) {
                    Ok(b) => serde_json::Value::Bool(b),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            } else {
                serde_json::Value::String(v.to_string())
            };
            fields.insert(k.clone(), value);
        }
        let input = match serde_json::from_value::<ConnectionInput>(fields.into()) {
            Ok(i) => Some(i),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        match input {
            Some(input) if errors.is_empty() => Ok(RowInput {
                input,
                client_secret,
                refresh_token,
            }),
            _ => Err(errors),
        }
    }
}

/// The columns export writes, in order: the fields of `connection add`, whether each secret is
/// set, and the (empty) columns that name where to read a secret on import.
pub fn export_columns() -> Vec<String> {
    let mut cols: Vec<String> = field_names();
    cols.extend(SECRET_SET_COLUMNS.iter().map(|s| s.to_string()));
    cols.extend(SECRET_COLUMNS.iter().map(|s| s.to_string()));
    cols
}

/// `ConnectionInput`'s fields, `name` first and the rest alphabetical, taken from the type
/// itself so a new field is exported with no change here.
fn field_names() -> Vec<String> {
    let mut names: Vec<String> = match serde_json::to_value(ConnectionInput::default()) {
        Ok(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
        _ => Vec::new(),
    };
    names.sort_by_key(|n| (n != "name", n.clone()));
    names
}

/// One connection for export: its fields as `connection add` takes them, and whether its
/// secrets are set.
pub fn export_row(
    input: &ConnectionInput,
    client_secret_set: bool,
    refresh_token_set: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut row = match serde_json::to_value(input) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    row.retain(|_, v| !v.is_null());
    // Numbers as numbers in JSON and TOML (the input type holds them as text, as typed).
    for key in ["port", "max_concurrent"] {
        if let Some(n) = row
            .get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            row.insert(key.into(), n.into());
        }
    }
    let set = |b: bool| serde_json::Value::from(if b { "set" } else { "not set" });
    row.insert("client_secret".into(), set(client_secret_set));
    row.insert("refresh_token".into(), set(refresh_token_set));
    row
}

/// The rows written in `format`, readable by [`parse`].
pub fn render(
    format: FileFormat,
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> Result<String, String> {
    match format {
        FileFormat::Json => serde_json::to_string_pretty(rows)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        FileFormat::Toml => {
            #[derive(serde::Serialize)]
            struct File<'a> {
                connection: &'a [serde_json::Map<String, serde_json::Value>],
            }
            toml::to_string(&File { connection: rows }).map_err(|e| e.to_string())
        }
        FileFormat::Csv => {
            let cols = export_columns();
            let mut out = String::new();
            csv::write_record(&mut out, &cols);
            for r in rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| match r.get(c) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    })
                    .collect();
                csv::write_record(&mut out, &cells);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats_read_the_same_rows() {
        let csv = "name,provider,port,enabled,client_secret_file\r\ncontoso,microsoft,587,false,s.txt\r\n";
        let json = r#"[{"name": "contoso", "provider": "microsoft", "port": 587, "enabled": false, "client_secret_file": "s.txt"}]"#;
        let toml = "[[connection]]\nname = \"contoso\"\nprovider = \"microsoft\"\nport = 587\nenabled = false\nclient_secret_file = \"s.txt\"\n";
        let read = |f, t| {
            let rows = parse(f, t).unwrap();
            let input = rows[0].input().unwrap();
            (
                input.input.name,
                input.input.port,
                input.input.enabled,
                input.client_secret,
            )
        };
        let want = (
            Some("contoso".to_string()),
            Some("587".to_string()),
            Some(false),
            Some(SecretSource::File("s.txt".into())),
        );
        assert_eq!(read(FileFormat::Csv, csv), want);
        assert_eq!(read(FileFormat::Json, json), want);
        assert_eq!(read(FileFormat::Toml, toml), want);
        assert_eq!(
            parse(FileFormat::Csv, csv).unwrap()[0].label(),
            "row 1 (line 2, contoso)"
        );
    }

    #[test]
    fn inline_secrets_unknown_columns_and_bad_booleans_are_all_reported_without_the_secret() {
        let json = r#"[{"name": "c", "client_secret": "Zx8Q~leaked", "tenent": "x", "enabled": "maybe",
                        "refresh_token_file": "a", "refresh_token_env": "B"}]"#;
        let errors = parse(FileFormat::Json, json).unwrap()[0]
            .input()
            .unwrap_err();
        let all = errors.join("\n");
        assert_eq!(errors.len(), 4, "{all}");
        assert!(
            all.contains("client_secret_file") && !all.contains("Zx8Q"),
            "{all}"
        );
        assert!(all.contains("tenent"), "{all}");
        assert!(all.contains("`maybe`"), "{all}");
        assert!(all.contains("not both"), "{all}");
    }

    #[test]
    fn an_export_reads_back_in_every_format() {
        let input = ConnectionInput {
            name: Some("contoso".into()),
            display_name: Some("Contoso, \"EU\"".into()),
            provider: Some("microsoft".into()),
            port: Some("587".into()),
            enabled: Some(true),
            ..Default::default()
        };
        let rows = vec![export_row(&input, true, false)];
        for f in [FileFormat::Json, FileFormat::Csv, FileFormat::Toml] {
            let text = render(f, &rows).unwrap();
            let back = parse(f, &text).unwrap();
            let got = back[0].input().unwrap();
            assert_eq!(got.input.display_name, input.display_name, "{f}");
            assert_eq!(got.input.port, input.port, "{f}");
            assert_eq!(got.input.enabled, Some(true), "{f}");
            assert!(got.client_secret.is_none(), "{f}");
            assert_eq!(back[0].fields["client_secret"], "set", "{f}");
        }
        assert!(
            render(FileFormat::Csv, &rows)
                .unwrap()
                .starts_with("name,authorize_url,ca_file,client_id,")
        );
    }

    #[test]
    fn a_file_that_is_not_a_list_of_connections_says_what_it_should_be() {
        assert!(
            parse(FileFormat::Json, "{\"a\": 1}")
                .unwrap_err()
                .contains("array")
        );
        assert!(
            parse(FileFormat::Toml, "[x]\na = 1\n")
                .unwrap_err()
                .contains("[[connection]]")
        );
        assert!(
            parse(FileFormat::Csv, "name\n\"open\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert_eq!("CSV".parse::<FileFormat>(), Ok(FileFormat::Csv));
        assert!(
            "xml"
                .parse::<FileFormat>()
                .unwrap_err()
                .contains("json, csv or toml")
        );
    }
}
