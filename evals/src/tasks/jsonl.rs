//! passuntil's native task format: one JSON object per line.
//!
//! ```text
//! {"id": "add-1", "prompt": "2+3=", "target": "5"}
//! {"id": "cap-2", "messages": [{"role": "user", "content": "Capital of France?"}], "targets": ["Paris"], "judge": "contains"}
//! {"id": "e", "prompt": "e to 2 decimals:", "target": 2.72, "judge": {"type": "numeric", "abs_tol": 0.005}}
//! {"id": "mc", "prompt": "The sky is", "choices": [" green", " blue"], "answer": 1}
//! {"id": "re", "prompt": "Say a year:", "judge": {"type": "regex", "pattern": "\\b(19|20)\\d\\d\\b"}}
//! {"id": "code", "prompt": "def f(x):\n", "test": "def check(f):\n    assert f(1) == 2\n", "entry_point": "f"}
//! ```
//!
//! Fields: `id` (default: the line number), `prompt` or `messages`; then one of `target` /
//! `targets` (with `judge`: `exact` (default), `normalized`, `contains`, `numeric`), a
//! `judge` of type `regex`, `choices` with `answer` (index) or `scores`, or `test` with
//! `entry_point`. `stop` lists strings that end a completion (programs default to a new
//! top-level statement). Unknown fields are errors, so typos do not pass silently. Blank lines and
//! lines starting with `//` are skipped.

use std::path::Path;

use serde_json::{Map, Value};

use super::{finish, malformed, read_text, Check, Message, Normalize, Problem, Prompt, TaskError};

const FIELDS: [&str; 12] = [
    "id",
    "stop",
    "prompt",
    "messages",
    "target",
    "targets",
    "judge",
    "choices",
    "answer",
    "scores",
    "test",
    "entry_point",
];

/// Loads a native JSONL task file.
pub fn load_jsonl(path: &Path) -> Result<Vec<Problem>, TaskError> {
    parse_jsonl(&path.display().to_string(), &read_text(path)?)
}

/// Parses native JSONL text; `file` names it in errors.
pub fn parse_jsonl(file: &str, text: &str) -> Result<Vec<Problem>, TaskError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        let v: Value =
            serde_json::from_str(t).map_err(|e| malformed(file, n, "-", e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(malformed(file, n, "-", "expected a JSON object"));
        };
        out.push((n, problem(file, n, &obj)?));
    }
    finish(file, out)
}

fn problem(file: &str, n: usize, o: &Map<String, Value>) -> Result<Problem, TaskError> {
    let err = |field: &str, msg: &str| malformed(file, n, field, msg);
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(k, "unknown field"));
    }
    let str_field = |k: &str| -> Result<Option<String>, TaskError> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(k, "expected a string")),
        }
    };
    let strings = |k: &str| -> Result<Option<Vec<String>>, TaskError> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| err(k, "expected strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(err(k, "expected a non-empty array of strings")),
        }
    };
    let id = match o.get("id") {
        None => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(x)) => x.to_string(),
        Some(_) => return Err(err("id", "expected a non-empty string or a number")),
    };
    let prompt = match (str_field("prompt")?, o.get("messages")) {
        (Some(p), None) => Prompt::Text(p),
        (None, Some(m)) => {
            let msgs: Vec<Message> =
                serde_json::from_value(m.clone()).map_err(|e| err("messages", &e.to_string()))?;
            if msgs.is_empty() {
                return Err(err("messages", "empty"));
            }
            Prompt::Chat(msgs)
        }
        (Some(_), Some(_)) => {
            return Err(err("messages", "give either prompt or messages, not both"))
        }
        (None, None) => return Err(err("prompt", "missing (or give messages)")),
    };
    let judge = judge_spec(o.get("judge")).map_err(|m| err("judge", &m))?;
    let targets = match (o.get("target"), strings("targets")?) {
        (Some(_), Some(_)) => {
            return Err(err("targets", "give either target or targets, not both"))
        }
        (Some(Value::String(s)), None) => Some(vec![s.clone()]),
        (Some(Value::Number(x)), None) => Some(vec![x.to_string()]),
        (Some(_), None) => return Err(err("target", "expected a string or a number")),
        (None, t) => t,
    };
    let check = if let Some(choices) = strings("choices")? {
        let scores = match (o.get("answer"), o.get("scores")) {
            (Some(a), None) => {
                let a = a
                    .as_u64()
                    .filter(|&a| (a as usize) < choices.len())
                    .ok_or_else(|| {
                        err(
                            "answer",
                            &format!("expected an index below {}", choices.len()),
                        )
                    })?;
                (0..choices.len())
                    .map(|i| f64::from(u8::from(i as u64 == a)))
                    .collect()
            }
            (None, Some(s)) => {
                let s: Vec<f64> =
                    serde_json::from_value(s.clone()).map_err(|e| err("scores", &e.to_string()))?;
                if s.len() != choices.len() {
                    return Err(err("scores", "needs one score per choice"));
                }
                s
            }
            _ => {
                return Err(err(
                    "answer",
                    "multiple choice needs exactly one of answer or scores",
                ))
            }
        };
        Check::MultipleChoice { choices, scores }
    } else if let Some(test) = str_field("test")? {
        let entry_point = str_field("entry_point")?
            .ok_or_else(|| err("entry_point", "missing (needed with test)"))?;
        Check::Program { test, entry_point }
    } else {
        match (judge, targets) {
            (Judge::Regex(pattern), None) => Check::Regex {
                pattern: super::Pattern::new(&pattern)
                    .map_err(|e| err("judge", &format!("bad pattern: {e}")))?,
            },
            (Judge::Regex(_), Some(_)) => {
                return Err(err("targets", "a regex judge takes no targets"))
            }
            (_, None) => {
                return Err(err(
                    "target",
                    "missing (or give choices, test, or a regex judge)",
                ))
            }
            (Judge::Exact, Some(targets)) => Check::Exact { targets },
            (Judge::Contains, Some(targets)) => Check::Contains { targets },
            (Judge::Normalized(options), Some(targets)) => Check::Normalized { targets, options },
            (Judge::Numeric { abs_tol, rel_tol }, Some(t)) => {
                let target = t[0]
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err("target", "a numeric judge needs a finite number"))?;
                Check::Numeric {
                    target,
                    abs_tol,
                    rel_tol,
                }
            }
        }
    };
    let stop = match strings("stop")? {
        Some(s) if s.iter().any(String::is_empty) => return Err(err("stop", "empty stop string")),
        Some(s) => s,
        None if matches!(check, Check::Program { .. }) => {
            super::PROGRAM_STOPS.iter().map(|s| s.to_string()).collect()
        }
        None => Vec::new(),
    };
    Ok(Problem {
        id,
        prompt,
        check,
        stop,
    })
}

enum Judge {
    Exact,
    Contains,
    Normalized(Normalize),
    Numeric { abs_tol: f64, rel_tol: f64 },
    Regex(String),
}

fn judge_spec(v: Option<&Value>) -> Result<Judge, String> {
    let (kind, opts) = match v {
        None => return Ok(Judge::Exact),
        Some(Value::String(s)) => (s.as_str(), Map::new()),
        Some(Value::Object(o)) => (
            o.get("type")
                .and_then(Value::as_str)
                .ok_or("missing \"type\"")?,
            o.clone(),
        ),
        Some(_) => return Err("expected a judge name or an object with \"type\"".into()),
    };
    let num = |k: &str, default: f64| -> Result<f64, String> {
        match opts.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{k} must be a non-negative number")),
        }
    };
    let flag = |k: &str, default: bool| -> Result<bool, String> {
        match opts.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{k} must be true or false")),
        }
    };
    let known = |allowed: &[&str]| -> Result<(), String> {
        match opts
            .keys()
            .find(|k| k.as_str() != "type" && !allowed.contains(&k.as_str()))
        {
            Some(k) => Err(format!("unknown option {k} for {kind}")),
            None => Ok(()),
        }
    };
    Ok(match kind {
        "exact" => {
            known(&[])?;
            Judge::Exact
        }
        "contains" => {
            known(&[])?;
            Judge::Contains
        }
        "normalized" => {
            known(&["ignore_case", "collapse_whitespace", "strip_punctuation"])?;
            let d = Normalize::default();
            Judge::Normalized(Normalize {
                ignore_case: flag("ignore_case", d.ignore_case)?,
                collapse_whitespace: flag("collapse_whitespace", d.collapse_whitespace)?,
                strip_punctuation: flag("strip_punctuation", d.strip_punctuation)?,
            })
        }
        "numeric" => {
            known(&["abs_tol", "rel_tol"])?;
            Judge::Numeric {
                abs_tol: num("abs_tol", 1e-6)?,
                rel_tol: num("rel_tol", 0.0)?,
            }
        }
        "regex" => {
            known(&["pattern"])?;
            Judge::Regex(
                opts.get("pattern")
                    .and_then(Value::as_str)
                    .ok_or("a regex judge needs \"pattern\"")?
                    .to_owned(),
            )
        }
        other => {
            return Err(format!(
                "unknown judge '{other}' (exact, normalized, contains, numeric, regex)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let text = r#"
// arithmetic
{"id": "add-1", "prompt": "2+3=", "target": "5"}
{"id": "cap", "messages": [{"role": "user", "content": "Capital of France?"}], "targets": ["Paris"], "judge": "contains"}
{"id": "e", "prompt": "e:", "target": 2.72, "judge": {"type": "numeric", "abs_tol": 0.005}}
{"id": "mc", "prompt": "The sky is", "choices": [" green", " blue"], "answer": 1}
{"id": "re", "prompt": "Year:", "judge": {"type": "regex", "pattern": "\\b(19|20)\\d\\d\\b"}}
{"id": "code", "prompt": "def f(x):\n", "test": "def check(f):\n    assert f(1) == 2\n", "entry_point": "f"}
{"prompt": "norm", "target": "Hello, World", "judge": {"type": "normalized", "strip_punctuation": false}}
"#;
        let p = parse_jsonl("t.jsonl", text).unwrap();
        assert_eq!(p.len(), 7);
        assert_eq!(
            p[0].check,
            Check::Exact {
                targets: vec!["5".into()]
            }
        );
        assert!(matches!(p[1].prompt, Prompt::Chat(ref m) if m[0].role == "user"));
        assert_eq!(
            p[2].check,
            Check::Numeric {
                target: 2.72,
                abs_tol: 0.005,
                rel_tol: 0.0
            }
        );
        assert_eq!(
            p[3].check,
            Check::MultipleChoice {
                choices: vec![" green".into(), " blue".into()],
                scores: vec![0.0, 1.0]
            }
        );
        assert!(matches!(p[4].check, Check::Regex { .. }));
        assert!(matches!(p[5].check, Check::Program { ref entry_point, .. } if entry_point == "f"));
        assert_eq!(p[6].id, "9");
        assert!(matches!(
            p[6].check,
            Check::Normalized {
                options: Normalize {
                    strip_punctuation: false,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("{\"prompt\": \"x\"}", "target"),
            ("{\"prompt\": 3, \"target\": \"x\"}", "prompt"),
            (
                "{\"prompt\": \"x\", \"target\": \"y\", \"tagret\": 1}",
                "tagret",
            ),
            (
                "{\"prompt\": \"x\", \"choices\": [\"a\"], \"answer\": 3}",
                "answer",
            ),
            (
                "{\"prompt\": \"x\", \"judge\": {\"type\": \"regex\", \"pattern\": \"(\"}}",
                "judge",
            ),
            (
                "{\"prompt\": \"x\", \"target\": \"y\", \"judge\": \"fuzzy\"}",
                "judge",
            ),
            (
                "{\"prompt\": \"x\", \"target\": \"abc\", \"judge\": \"numeric\"}",
                "target",
            ),
            ("{\"prompt\": \"x\", \"test\": \"t\"}", "entry_point"),
            ("[1, 2]", "-"),
            ("{\"prompt\": \"x\", \"target\": \"y\"", "-"),
        ];
        for (line, field) in cases {
            let text = format!("{{\"prompt\": \"ok\", \"target\": \"1\"}}\n{line}\n");
            match parse_jsonl("tasks.jsonl", &text) {
                Err(TaskError::Malformed {
                    file,
                    line: 2,
                    field: f,
                    ..
                }) => {
                    assert_eq!(file, "tasks.jsonl");
                    assert_eq!(f, field, "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_jsonl("e.jsonl", "\n\n"),
            Err(TaskError::Empty { .. })
        ));
        let dup = "{\"id\": \"a\", \"prompt\": \"x\", \"target\": \"1\"}\n{\"id\": \"a\", \"prompt\": \"y\", \"target\": \"2\"}";
        assert!(matches!(
            parse_jsonl("d.jsonl", dup),
            Err(TaskError::DuplicateId { line: 2, .. })
        ));
    }
}
