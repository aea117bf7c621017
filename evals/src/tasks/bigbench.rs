//! BIG-bench `task.json` (JSON tasks; programmatic tasks and subtask folders are not read).
//!
//! Each example becomes one problem, zero-shot:
//! `task_prefix + example_input_prefix + input [+ choices] + example_output_prefix`, with
//! BIG-bench's defaults `"\nQ: "` and `"\nA: "`. Examples with `target_scores` are multiple
//! choice, scored by log-likelihood; when `append_choices_to_input` is on (the default) the
//! choices are listed after the input, each after `choice_prefix` (default `"\n  choice: "`).
//! BIG-bench shuffles that list with its own random generator; passuntil lists it in sorted
//! order so that a run is reproducible. Examples with `target` (a string or a list) are
//! generative, judged by exact match after trimming; their completions end at the task's
//! `stop_string`, or at the first newline when it has none (answers in this format are one
//! line).

use std::path::Path;

use serde_json::Value;

use super::{finish, malformed, read_text, Check, Problem, Prompt, TaskError};

/// Loads a BIG-bench `task.json`.
pub fn load_bigbench(path: &Path) -> Result<Vec<Problem>, TaskError> {
    parse_bigbench(&path.display().to_string(), &read_text(path)?)
}

/// Parses BIG-bench task JSON; `file` names it in errors (line numbers are example numbers).
pub fn parse_bigbench(file: &str, text: &str) -> Result<Vec<Problem>, TaskError> {
    let task: Value =
        serde_json::from_str(text).map_err(|e| malformed(file, e.line(), "-", e.to_string()))?;
    let opt_str = |k: &str, default: &str| -> Result<String, TaskError> {
        match task.get(k) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(malformed(file, 0, k, "expected a string")),
        }
    };
    let task_prefix = opt_str("task_prefix", "")?;
    let input_prefix = opt_str("example_input_prefix", "\nQ: ")?;
    let output_prefix = opt_str("example_output_prefix", "\nA: ")?;
    let choice_prefix = opt_str("choice_prefix", "\n  choice: ")?;
    let stop = opt_str("stop_string", "\n")?;
    if stop.is_empty() {
        return Err(malformed(file, 0, "stop_string", "empty"));
    }
    let append_choices = match task.get("append_choices_to_input") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(malformed(
                file,
                0,
                "append_choices_to_input",
                "expected true or false",
            ))
        }
    };
    let name = task
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("task")
        .to_owned();
    let examples =
        match task.get("examples") {
            Some(Value::Array(a)) => a,
            Some(_) => return Err(malformed(file, 0, "examples", "expected an array")),
            None => return Err(malformed(
                file,
                0,
                "examples",
                "missing (tasks split into subtask folders are read one subtask file at a time)",
            )),
        };
    let mut out = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let n = i + 1;
        let err =
            |field: &str, msg: &str| malformed(file, n, &format!("examples[{i}].{field}"), msg);
        let input = ex
            .get("input")
            .and_then(Value::as_str)
            .ok_or_else(|| err("input", "missing or not a string"))?;
        let mut prompt = format!("{task_prefix}{input_prefix}{input}");
        let check = match (ex.get("target_scores"), ex.get("target")) {
            (Some(Value::Object(scores)), _) => {
                if scores.is_empty() {
                    return Err(err("target_scores", "no choices"));
                }
                let mut choices = Vec::with_capacity(scores.len());
                let mut values = Vec::with_capacity(scores.len());
                // serde_json keeps object keys sorted: the choice order is deterministic.
                for (choice, score) in scores {
                    let s = score
                        .as_f64()
                        .ok_or_else(|| err("target_scores", "scores must be numbers"))?;
                    choices.push(choice.clone());
                    values.push(s);
                }
                if append_choices {
                    for c in &choices {
                        prompt.push_str(&choice_prefix);
                        prompt.push_str(c);
                    }
                }
                Check::MultipleChoice {
                    choices,
                    scores: values,
                }
            }
            (Some(_), _) => {
                return Err(err("target_scores", "expected an object of choice → score"))
            }
            (None, Some(Value::String(t))) => Check::Exact {
                targets: vec![t.clone()],
            },
            (None, Some(Value::Array(ts))) if !ts.is_empty() => Check::Exact {
                targets: ts
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| err("target", "targets must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
            },
            (None, Some(_)) => {
                return Err(err(
                    "target",
                    "expected a string or a non-empty list of strings",
                ))
            }
            (None, None) => return Err(err("target", "missing target or target_scores")),
        };
        prompt.push_str(&output_prefix);
        out.push((
            n,
            Problem {
                id: format!("{name}/{i}"),
                stop: if matches!(check, Check::MultipleChoice { .. }) {
                    Vec::new()
                } else {
                    vec![stop.clone()]
                },
                prompt: Prompt::Text(prompt),
                check,
            },
        ));
    }
    finish(file, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generative_and_multiple_choice() {
        let task = r#"{
            "name": "arith", "description": "d", "keywords": [], "metrics": ["exact_str_match"],
            "task_prefix": "Solve.",
            "examples": [
                {"input": "2 + 2", "target": "4"},
                {"input": "3 + 3", "target": ["6", "six"]},
                {"input": "Sky?", "target_scores": {"blue": 1, "green": 0}}
            ]
        }"#;
        let p = parse_bigbench("task.json", task).unwrap();
        assert_eq!(p[0].prompt, Prompt::Text("Solve.\nQ: 2 + 2\nA: ".into()));
        assert_eq!(p[0].id, "arith/0");
        assert_eq!(
            p[1].check,
            Check::Exact {
                targets: vec!["6".into(), "six".into()]
            }
        );
        assert_eq!(
            p[2].prompt,
            Prompt::Text("Solve.\nQ: Sky?\n  choice: blue\n  choice: green\nA: ".into())
        );
        assert_eq!(
            p[2].check,
            Check::MultipleChoice {
                choices: vec!["blue".into(), "green".into()],
                scores: vec![1.0, 0.0]
            }
        );
    }

    #[test]
    fn errors_name_the_example() {
        let bad = r#"{"examples": [{"input": "a", "target": "b"}, {"input": "c"}]}"#;
        match parse_bigbench("t.json", bad) {
            Err(TaskError::Malformed { line: 2, field, .. }) => {
                assert_eq!(field, "examples[1].target")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_bigbench("t.json", "{\"name\": 1}"),
            Err(TaskError::Malformed { .. })
        ));
        assert!(matches!(
            parse_bigbench("t.json", "{oops"),
            Err(TaskError::Malformed { .. })
        ));
    }
}
