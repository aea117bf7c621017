//! BIG-bench `task.json` (JSON tasks; programmatic tasks are not read). A task without
//! `examples` whose folder holds subtask folders (`arithmetic/1_digit_addition/task.json`,
//! ...) is read whole: every subtask, in folder-name order, as BIG-bench reads it.
//!
//! Each example becomes a problem, zero-shot:
//! `task_prefix + example_input_prefix + input [+ choices] + example_output_prefix`, with
//! BIG-bench's defaults `"\nQ: "` and `"\nA: "`. When `append_choices_to_input` is on (the
//! default) an example's `target_scores` keys are listed after the input, each after
//! `choice_prefix` (default `"\n  choice: "`); BIG-bench shuffles that list with its own
//! random generator, passuntil keeps key order so that a run is reproducible.
//!
//! How an example is evaluated follows the task's `metrics`, as BIG-bench's `JsonTask` does:
//! - **Multiple choice** (a multiple-choice metric such as `multiple_choice_grade`, and
//!   `target_scores`): the choices are scored by log-likelihood.
//! - **Generative** (a generative metric such as `exact_str_match`): samples are judged as
//!   BIG-bench scores its `generate_text` output ([`Check::BigBench`]): cut after the task's
//!   `stop_string` (kept, unless the output opens with it, when BIG-bench does not cut), then
//!   the first match of its `output_regex`, or of the default `[^.?!;\n]+` when the task
//!   gives neither; the response is then compared with the targets by the task's
//!   `preferred_score` when it is `exact_str_match`, `case_insensitive_str_match` or
//!   `numeric_match_with_0_1_relative_error`, else the first of those in `metrics`, else
//!   exact match (BLEU, ROUGE, BLEURT and sequence F1 give no pass or fail). Nothing is
//!   trimmed that BIG-bench does not trim. An example with `target_scores` and no `target`
//!   uses its highest-scoring choice (the first in key order on ties; BIG-bench takes the
//!   first in file order). Generation stops at the stop string (not where it opens the text),
//!   or, under the default pattern, at the first `.?!;` or newline after some other text;
//!   with a task pattern and no stop string, at the token limit.
//! - An example both ways (both kinds of metric, as `emoji_movie`) gives two problems,
//!   `NAME/i/mc` and `NAME/i/gen`; otherwise the problem is `NAME/i`. Without `metrics`,
//!   `target_scores` means multiple choice and `target` generative.

use std::path::Path;

use serde_json::Value;

use super::{
    finish, malformed, read_text, BigBenchMetric, Check, Pattern, Problem, Prompt, TaskError,
};
use crate::judges::BIGBENCH_DEFAULT_REGEX;

/// BIG-bench's generative metrics.
const GENERATIVE: [&str; 7] = [
    "bleu",
    "bleurt",
    "exact_str_match",
    "case_insensitive_str_match",
    "sequence_f1",
    "numeric_match_with_0_1_relative_error",
    "rouge",
];

/// BIG-bench's multiple-choice metrics.
const MULTIPLE_CHOICE: [&str; 6] = [
    "multiple_choice_grade",
    "calibration_multiple_choice_brier_score",
    "expected_calibration_error",
    "weighted_log_probabilities",
    "weighted_probabilities",
    "macro_f1",
];

/// The separators the default pattern stops at.
const DEFAULT_STOPS: [&str; 5] = [".", "?", "!", ";", "\n"];

/// Loads a BIG-bench `task.json`, or, for a task split into subtask folders, all of them.
pub fn load_bigbench(path: &Path) -> Result<Vec<Problem>, TaskError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let task: Value =
        serde_json::from_str(&text).map_err(|e| malformed(&file, e.line(), "-", e.to_string()))?;
    if task.get("examples").is_some() {
        return finish(&file, parse_task(&file, &task, None)?);
    }
    let parent = task_name(&task);
    let subtasks = bigbench_subtasks(path)?;
    if subtasks.is_empty() {
        return Err(malformed(
            &file,
            0,
            "examples",
            "missing, and no subtask folder with a task.json beside it",
        ));
    }
    let mut out = Vec::new();
    for sub in subtasks {
        let sub_file = sub.display().to_string();
        let sub_text = read_text(&sub)?;
        let sub_task: Value = serde_json::from_str(&sub_text)
            .map_err(|e| malformed(&sub_file, e.line(), "-", e.to_string()))?;
        out.extend(parse_task(&sub_file, &sub_task, Some(&parent))?);
    }
    finish(&file, out)
}

/// The subtask files of a BIG-bench task at `path` that only names subtask folders (no
/// `examples` of its own): every `*/task.json` beside it, in path order; empty for a task
/// with examples (or a file that is not task JSON, which loading reports).
pub fn bigbench_subtasks(path: &Path) -> Result<Vec<std::path::PathBuf>, TaskError> {
    let text = read_text(path)?;
    let has_examples = serde_json::from_str::<Value>(&text)
        .map(|t| t.get("examples").is_some())
        .unwrap_or(true);
    if has_examples {
        return Ok(Vec::new());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut subtasks: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| TaskError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path().join("task.json"))
        .filter(|p| p.is_file())
        .collect();
    subtasks.sort();
    Ok(subtasks)
}

/// Parses BIG-bench task JSON; `file` names it in errors (line numbers are example numbers).
pub fn parse_bigbench(file: &str, text: &str) -> Result<Vec<Problem>, TaskError> {
    let task: Value =
        serde_json::from_str(text).map_err(|e| malformed(file, e.line(), "-", e.to_string()))?;
    finish(file, parse_task(file, &task, None)?)
}

fn task_name(task: &Value) -> String {
    task.get("name")
        .and_then(Value::as_str)
        .unwrap_or("task")
        .to_owned()
}

/// The problems of one task's examples, named `PARENT:NAME/i` for a subtask.
fn parse_task(
    file: &str,
    task: &Value,
    parent: Option<&str>,
) -> Result<Vec<(usize, Problem)>, TaskError> {
    let opt_str = |k: &str| -> Result<Option<String>, TaskError> {
        match task.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(malformed(file, 0, k, "expected a string")),
        }
    };
    let task_prefix = opt_str("task_prefix")?.unwrap_or_default();
    let input_prefix = opt_str("example_input_prefix")?.unwrap_or_else(|| "\nQ: ".into());
    let output_prefix = opt_str("example_output_prefix")?.unwrap_or_else(|| "\nA: ".into());
    let choice_prefix = opt_str("choice_prefix")?.unwrap_or_else(|| "\n  choice: ".into());
    let stop_string = opt_str("stop_string")?.filter(|s| !s.is_empty());
    let output_regex = match opt_str("output_regex")? {
        Some(source) => {
            let p = Pattern::new(&source)
                .map_err(|e| malformed(file, 0, "output_regex", e.to_string()))?;
            if p.groups() > 1 {
                return Err(malformed(
                    file,
                    0,
                    "output_regex",
                    "several capture groups (BIG-bench refuses them too; use (?:...))",
                ));
            }
            Some(p)
        }
        None if stop_string.is_none() => {
            Some(Pattern::new(BIGBENCH_DEFAULT_REGEX).expect("the default pattern compiles"))
        }
        None => None,
    };
    let stop: Vec<String> = match (&stop_string, &output_regex) {
        (Some(s), _) => vec![s.clone()],
        (None, Some(p)) if p.as_str() == BIGBENCH_DEFAULT_REGEX => {
            DEFAULT_STOPS.iter().map(|s| s.to_string()).collect()
        }
        _ => Vec::new(),
    };
    let metrics: Option<Vec<String>> = match task.get("metrics") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|m| {
                    m.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| malformed(file, 0, "metrics", "expected strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(malformed(file, 0, "metrics", "expected an array")),
    };
    let listed = |set: &[&str]| {
        metrics
            .as_ref()
            .map(|m| m.iter().any(|x| set.contains(&x.as_str())))
    };
    let (gen_listed, mc_listed) = (listed(&GENERATIVE), listed(&MULTIPLE_CHOICE));
    let supported = |m: &str| match m {
        "exact_str_match" => Some(BigBenchMetric::ExactStrMatch),
        "case_insensitive_str_match" => Some(BigBenchMetric::CaseInsensitiveStrMatch),
        "numeric_match_with_0_1_relative_error" => {
            Some(BigBenchMetric::NumericRelativeError { rel_error: 0.1 })
        }
        _ => None,
    };
    let metric = opt_str("preferred_score")?
        .and_then(|m| supported(&m))
        .or_else(|| metrics.iter().flatten().find_map(|m| supported(m)))
        .unwrap_or(BigBenchMetric::ExactStrMatch);
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
    let name = match parent {
        Some(p) => format!("{p}:{}", task_name(task)),
        None => task_name(task),
    };
    let examples = match task.get("examples") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed(file, 0, "examples", "expected an array")),
        None => return Err(malformed(file, 0, "examples", "missing")),
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
        // The choices with their scores, in key order.
        let scored: Option<Vec<(String, f64)>> = match ex.get("target_scores") {
            None => None,
            Some(Value::Object(scores)) => {
                if scores.is_empty() {
                    return Err(err("target_scores", "no choices"));
                }
                // serde_json keeps object keys sorted: the choice order is deterministic.
                Some(
                    scores
                        .iter()
                        .map(|(c, v)| {
                            v.as_f64()
                                .map(|s| (c.clone(), s))
                                .ok_or_else(|| err("target_scores", "scores must be numbers"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(_) => return Err(err("target_scores", "expected an object of choice → score")),
        };
        let targets: Option<Vec<String>> = match ex.get("target") {
            None => None,
            Some(Value::String(t)) => Some(vec![t.clone()]),
            Some(Value::Array(ts)) if !ts.is_empty() => Some(
                ts.iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| err("target", "targets must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => {
                return Err(err(
                    "target",
                    "expected a string or a non-empty list of strings",
                ))
            }
        };
        if scored.is_none() && targets.is_none() {
            return Err(err("target", "missing target or target_scores"));
        }
        if let (Some(choices), true) = (&scored, append_choices) {
            for (c, _) in choices {
                prompt.push_str(&choice_prefix);
                prompt.push_str(c);
            }
        }
        prompt.push_str(&output_prefix);
        // Which ways the example runs.
        let mc = scored.is_some() && mc_listed.unwrap_or(true);
        let gen_targets = match (&targets, &scored, gen_listed) {
            (Some(t), _, None | Some(true)) => Some(t.clone()),
            (None, Some(s), Some(true)) => {
                let top = s.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
                s.iter().find(|c| c.1 == top).map(|c| vec![c.0.clone()])
            }
            // Listed metrics that ask for neither way: the example is not dropped.
            (Some(t), _, Some(false)) if !mc => Some(t.clone()),
            _ => None,
        };
        let mc = mc || gen_targets.is_none();
        let both = mc && gen_targets.is_some();
        if mc {
            let choices = scored
                .clone()
                .ok_or_else(|| err("target_scores", "missing"))?;
            out.push((
                n,
                Problem {
                    id: if both {
                        format!("{name}/{i}/mc")
                    } else {
                        format!("{name}/{i}")
                    },
                    stop: Vec::new(),
                    prompt: Prompt::Text(prompt.clone()),
                    check: Check::MultipleChoice {
                        choices: choices.iter().map(|c| c.0.clone()).collect(),
                        scores: choices.iter().map(|c| c.1).collect(),
                    },
                },
            ));
        }
        if let Some(targets) = gen_targets {
            out.push((
                n,
                Problem {
                    id: if both {
                        format!("{name}/{i}/gen")
                    } else {
                        format!("{name}/{i}")
                    },
                    stop: stop.clone(),
                    prompt: Prompt::Text(prompt),
                    check: Check::BigBench {
                        targets,
                        metric,
                        stop_string: stop_string.clone(),
                        output_regex: output_regex.clone(),
                    },
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generative_and_multiple_choice() {
        let task = r#"{
            "name": "arith", "description": "d", "keywords": [],
            "metrics": ["exact_str_match", "multiple_choice_grade"],
            "task_prefix": "Solve.",
            "examples": [
                {"input": "2 + 2", "target": "4"},
                {"input": "3 + 3", "target": ["6", "six"]},
                {"input": "Sky?", "target_scores": {"blue": 1, "green": 0}},
                {"input": "1 + 1", "target": "2", "target_scores": {"2": 1, "3": 0}}
            ]
        }"#;
        let p = parse_bigbench("task.json", task).unwrap();
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "arith/0",
                "arith/1",
                "arith/2/mc",
                "arith/2/gen",
                "arith/3/mc",
                "arith/3/gen"
            ]
        );
        assert_eq!(p[0].prompt, Prompt::Text("Solve.\nQ: 2 + 2\nA: ".into()));
        // Neither a stop string nor a pattern: BIG-bench's default pattern, and generation
        // stops at its separators.
        match &p[1].check {
            Check::BigBench {
                targets,
                metric: BigBenchMetric::ExactStrMatch,
                stop_string: None,
                output_regex: Some(re),
            } => {
                assert_eq!(targets, &["6", "six"]);
                assert_eq!(re.as_str(), BIGBENCH_DEFAULT_REGEX);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p[1].stop, DEFAULT_STOPS);
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
        // The generative half of a choices-only example answers with the best choice, from
        // the same prompt.
        assert_eq!(p[3].prompt, p[2].prompt);
        assert!(matches!(&p[3].check, Check::BigBench { targets, .. } if targets == &["blue"]));
        assert!(matches!(&p[5].check, Check::BigBench { targets, .. } if targets == &["2"]));
    }

    #[test]
    fn metrics_choose_the_ways_and_the_judge() {
        let task = |metrics: &str, extra: &str| {
            format!(
                r#"{{"name": "t", {extra} "metrics": {metrics}, "examples": [
                    {{"input": "q", "target": "-7", "target_scores": {{"-7": 1, "7": 0}}}}]}}"#
            )
        };
        let p = parse_bigbench("t.json", &task(r#"["multiple_choice_grade"]"#, "")).unwrap();
        assert_eq!(p.len(), 1);
        assert!(matches!(p[0].check, Check::MultipleChoice { .. }));
        let p = parse_bigbench(
            "t.json",
            &task(
                r#"["bleu", "numeric_match_with_0_1_relative_error"]"#,
                r#""stop_string": ".", "#,
            ),
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        match &p[0].check {
            Check::BigBench {
                metric: BigBenchMetric::NumericRelativeError { rel_error },
                stop_string: Some(s),
                output_regex: None,
                ..
            } => assert_eq!((*rel_error, s.as_str()), (0.1, ".")),
            other => panic!("{other:?}"),
        }
        assert_eq!(p[0].stop, ["."]);
        // preferred_score decides among listed metrics.
        let p = parse_bigbench(
            "t.json",
            &task(
                r#"["exact_str_match", "case_insensitive_str_match"]"#,
                r#""preferred_score": "case_insensitive_str_match", "output_regex": "\\d+", "#,
            ),
        )
        .unwrap();
        assert!(matches!(
            p[0].check,
            Check::BigBench {
                metric: BigBenchMetric::CaseInsensitiveStrMatch,
                ..
            }
        ));
        assert!(p[0].stop.is_empty());
        // A pattern with two groups is refused, as BIG-bench refuses it.
        let err = parse_bigbench(
            "t.json",
            &task(r#"["exact_str_match"]"#, r#""output_regex": "(a)(b)", "#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("output_regex"), "{err}");
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
