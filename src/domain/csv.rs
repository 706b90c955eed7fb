//! A small RFC 4180 CSV codec for connection files: quoted fields, doubled quotes, commas and
//! line breaks inside quotes, CRLF or LF. Small enough to own rather than add a dependency.

/// One record and the line it starts on (1-based), for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Why a CSV text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CsvError {
    pub line: usize,
    pub message: String,
}

/// Every record of `text`; blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Record>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // a spreadsheet's BOM
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    // Whether the current field began with a quote (then text after its closing quote is wrong).
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => {
                return Err(CsvError {
                    line,
                    message: "a quote inside an unquoted field: quote the whole field and double the quote (\"\")".into(),
                });
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
                end_record(&mut records, &mut fields, start);
                line += 1;
                start = line;
            }
            _ if was_quoted => {
                return Err(CsvError {
                    line,
                    message: "text after a closing quote: put the whole field inside the quotes"
                        .into(),
                });
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError {
            line: start,
            message: "a quoted field is never closed".into(),
        });
    }
    fields.push(field);
    end_record(&mut records, &mut fields, start);
    Ok(records)
}

fn end_record(records: &mut Vec<Record>, fields: &mut Vec<String>, line: usize) {
    let fields = std::mem::take(fields);
    if fields.len() == 1 && fields[0].is_empty() {
        return;
    }
    records.push(Record { line, fields });
}

/// One CSV line (with its CRLF); fields are quoted only when they need it.
pub fn write_record<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = f.as_ref();
        if f.contains([',', '"', '\n', '\r']) || f.starts_with(' ') || f.ends_with(' ') {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        parse(text).unwrap().into_iter().map(|r| r.fields).collect()
    }

    #[test]
    fn reads_quotes_commas_line_breaks_and_blank_lines() {
        let cases: &[(&str, &[&[&str]])] = &[
            ("a,b\n1,2\n", &[&["a", "b"], &["1", "2"]]),
            ("a,b\r\n1,2", &[&["a", "b"], &["1", "2"]]),
            ("a,,c\n", &[&["a", "", "c"]]),
            ("\"x, y\",\"say \"\"hi\"\"\"\n", &[&["x, y", "say \"hi\""]]),
            (
                "\"two\nlines\",z\n\nnext,1\n",
                &[&["two\nlines", "z"], &["next", "1"]],
            ),
            ("\u{feff}name\nc1\n", &[&["name"], &["c1"]]),
        ];
        for (text, want) in cases {
            let want: Vec<Vec<String>> = want
                .iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(fields(text), want, "{text:?}");
        }
        let lines: Vec<usize> = parse("h\n\"a\nb\"\nc\n")
            .unwrap()
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    #[test]
    fn malformed_quotes_name_the_line() {
        for (text, line) in [("a\nb\"c\n", 2), ("a\n\"b\"c\n", 2), ("a\n\"open\n", 2)] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let rows = [
            vec!["name", "display_name"],
            vec!["c1", "Contoso, \"EU\"\nbilling"],
            vec!["c2", " padded "],
            vec!["c3", ""],
        ];
        let mut out = String::new();
        for r in &rows {
            write_record(&mut out, r);
        }
        assert_eq!(
            fields(&out),
            rows.map(|r| r.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
    }
}
