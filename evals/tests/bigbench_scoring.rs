//! passuntil's BIG-bench generative scoring against BIG-bench's own code: the
//! `postprocess_output` and metric functions of the `bigbench==1.0.0` sdist, run by python3 on
//! the same outputs (extracted from their files, without BIG-bench's heavy imports).
//!
//! The outputs are hand-picked edge cases, seeded random strings over the characters that
//! matter (digits, signs, separators, whitespace, letters in two cases, underscores), and real
//! continuations of the default model on BIG-bench prompts. Every response must be the same
//! string, and every verdict the same, except where BIG-bench is wrong: its relative error
//! divides by the target itself, so for a negative target any number passes there.

use std::path::Path;
use std::process::Command;

use evals::judges::{bigbench_metric, bigbench_response, BIGBENCH_DEFAULT_REGEX};
use evals::tasks::{BigBenchMetric, Pattern};

mod common;

/// Runs BIG-bench's functions on `cases` (JSON: text, stop, regex, metric, targets) and
/// returns each case's (response, score).
fn bigbench_scores(code: &Path, cases: &serde_json::Value) -> Vec<(String, f64)> {
    let script = r#"import ast, json, re, sys
from typing import Any, Dict, List
def functions(path, names):
    tree = ast.parse(open(path).read())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert len(keep) == len(names), [n.name for n in keep]
    ns = {'re': re, 'Any': Any, 'Dict': Dict, 'List': List}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, 'exec'), ns)
    return ns
code = sys.argv[1]
ns = functions(code + '/models/model_utils.py', ['postprocess_output'])
ns.update(functions(code + '/api/task_metrics.py', [
    'exact_str_match_fn', 'case_insensitive_str_match_fn',
    'check_if_numeric_value_is_within_relative_error',
    'numeric_match_with_0_1_relative_error_fn']))
default = [l for l in open(code + '/api/json_task.py') if l.startswith('_DEFAULT_REGEX')]
out = []
for c in json.load(sys.stdin):
    regex = c['regex']
    if regex is None and c['stop'] is None:
        regex = eval(default[0].split('=', 1)[1])
    r = ns['postprocess_output'](c['text'], None, c['stop'], regex)
    fn = ns[c['metric'] + '_fn']
    score = list(fn([c['targets']], [r]).values())[0]
    out.append([r, score])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(code)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Seeded random strings over the characters BIG-bench's post-processing and metrics care
/// about.
fn random_texts(n: usize) -> Vec<String> {
    const ALPHABET: &[&str] = &[
        "0", "1", "2", "7", "-", "+", ".", ",", " ", "\n", "\t", "?", "!", ";", "a", "A", "e", "E",
        "_", "é", "Paris", "paris", " 12", "1e3", "inf", "nan", "x",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let len = (next() % 9) as usize;
            (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect()
        })
        .collect()
}

/// Real continuations of the default model on BIG-bench arithmetic prompts (no stop string:
/// the raw outputs BIG-bench's post-processing sees).
fn model_texts() -> Vec<String> {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let task = common::bigbench_tasks_dir().join("arithmetic/2_digit_multiplication/task.json");
    let problems = evals::tasks::load(&task, evals::tasks::Format::Bigbench).unwrap();
    let mut texts = Vec::new();
    for p in problems.iter().filter(|p| p.id.ends_with("/gen")).take(6) {
        let evals::tasks::Prompt::Text(prompt) = &p.prompt else {
            unreachable!("BIG-bench prompts are text")
        };
        let r = evals::generate::run(
            evals::generate::BackendKind::Native,
            &model,
            &evals::generate::GenerateRequest {
                prompt: prompt.clone(),
                n: 4,
                options: engine::generate::GenerateOptions {
                    max_tokens: 12,
                    ..Default::default()
                },
                threads: Some(2),
                activations: engine::Activations::Q8,
                chat: false,
                logprobs: None,
                allow_long_context: false,
            },
        )
        .unwrap();
        texts.extend(r.samples.into_iter().map(|s| s.text));
    }
    texts
}

#[test]
fn scoring_matches_bigbench_sample_by_sample() {
    let code = common::bigbench_code_dir();
    let mut texts: Vec<String> = [
        "",
        "7",
        " 7",
        "7.",
        "\n\n7",
        "\n\n7 apples. 8",
        "-7",
        "+7",
        "7\n",
        ". 7",
        ";7!",
        "12.5",
        "1_000",
        "_1",
        "1__0",
        " 12 ",
        "1e3",
        "-1e3",
        "inf",
        "-inf",
        "nan",
        "0",
        "-0.0",
        "PARIS",
        " Paris ",
        "Paris.",
        "\u{1f}Paris",
        "x 42 y 43",
        "42-43",
        "0x10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.extend(random_texts(400));
    let real = model_texts();
    assert!(real.len() >= 20, "{}", real.len());
    texts.extend(real);
    // (stop string, pattern, metric, targets)
    type Config = (
        Option<&'static str>,
        Option<&'static str>,
        BigBenchMetric,
        Vec<&'static str>,
    );
    let exact = BigBenchMetric::ExactStrMatch;
    let ci = BigBenchMetric::CaseInsensitiveStrMatch;
    let num = BigBenchMetric::NumericRelativeError { rel_error: 0.1 };
    let configs: Vec<Config> = vec![
        (None, None, exact, vec!["7"]),
        (None, None, exact, vec!["7 apples", "12"]),
        (None, Some(r"[-+]?\d+"), exact, vec!["-7"]),
        (None, Some(r"[-+]?\d+"), exact, vec!["12"]),
        (Some("."), None, exact, vec!["7."]),
        (Some("\n"), Some(r"\d+"), exact, vec!["7"]),
        (Some("."), Some(r"(\d+)\."), exact, vec!["7"]),
        (None, None, ci, vec![" paris "]),
        (Some("."), None, ci, vec!["PARIS."]),
        (None, Some(r"[-+]?[\d.e_]+|inf|nan"), num, vec!["12"]),
        (None, Some(r"[-+]?[\d.e_]+|inf|nan"), num, vec!["0"]),
        (None, Some(r"[-+]?[\d.e_]+|inf|nan"), num, vec!["-12"]),
        (None, None, num, vec!["1000"]),
        (None, None, num, vec!["-7"]),
    ];
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (stop, regex, metric, targets) in &configs {
        let pattern = match (stop, regex) {
            (_, Some(r)) => Some(Pattern::new(r).unwrap()),
            (None, None) => Some(Pattern::new(BIGBENCH_DEFAULT_REGEX).unwrap()),
            (Some(_), None) => None,
        };
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        for text in &texts {
            let response = bigbench_response(text, *stop, pattern.as_ref());
            let pass = bigbench_metric(*metric, &targets, &response);
            ours.push((response, pass, targets[0].starts_with('-')));
            cases.push(serde_json::json!({
                "text": text, "stop": stop, "regex": regex, "metric": metric.name(),
                "targets": targets,
            }));
        }
    }
    let theirs = bigbench_scores(&code, &serde_json::Value::Array(cases.clone()));
    assert_eq!(theirs.len(), ours.len());
    let mut negative_target_passes = 0;
    for (i, ((response, pass, negative), (their_response, score))) in
        ours.iter().zip(&theirs).enumerate()
    {
        assert_eq!(response, their_response, "case {}", cases[i]);
        let theirs_pass = *score == 1.0;
        if *pass != theirs_pass {
            // BIG-bench's only disagreement: a negative target's relative error is negative.
            assert!(
                *negative
                    && theirs_pass
                    && cases[i]["metric"] == "numeric_match_with_0_1_relative_error",
                "case {}: ours {pass}, BIG-bench {theirs_pass}",
                cases[i]
            );
            negative_target_passes += 1;
        }
    }
    // The corpus does reach BIG-bench's error.
    assert!(negative_target_passes > 0);
    eprintln!(
        "{} cases agree, {negative_target_passes} differ where BIG-bench passes any number \
         for a negative target",
        ours.len() - negative_target_passes
    );
}

/// A run on BIG-bench problems stops where BIG-bench's post-processing decides the response,
/// keeps the task's stop string in the judged text, and judges each sample as the functions
/// checked above do.
#[test]
fn a_run_stops_and_judges_as_bigbench() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let examples = r#"[{"input": "What is 2 plus 3?", "target": "5"},
                       {"input": "Name a colour.", "target": ["red", "blue"]}]"#;
    for (name, extra) in [("plain", ""), ("stop", r#""stop_string": ".","#)] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let task = dir.join("task.json");
        std::fs::write(
            &task,
            format!(
                r#"{{"name": "{name}", {extra} "metrics": ["exact_str_match"], "examples": {examples}}}"#
            ),
        )
        .unwrap();
        let mut opts = evals::run::RunOptions::new(model.clone(), task.clone(), dir.join("run"));
        opts.backend = evals::generate::BackendKind::Native;
        opts.rule = evals::run::StopRule::Fixed { n: 8, k: vec![1] };
        opts.max_tokens = 16;
        opts.exec.threads = Some(2);
        evals::run::start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
        let problems = evals::tasks::load(&task, evals::tasks::Format::Bigbench).unwrap();
        let records = evals::run::load_samples(&opts.out.join("samples.jsonl"))
            .unwrap()
            .records;
        assert_eq!(records.len(), 16);
        if name == "stop" {
            // A run from before BIG-bench's own rules is not continued under them.
            let mut old = evals::run::RunConfig::load(&opts.out).unwrap();
            assert_eq!(old.bigbench_scoring, 1);
            old.bigbench_scoring = 0;
            old.save(&opts.out).unwrap();
            match evals::run::resume(&opts.out, &opts.exec, &mut |_: &evals::run::Stats| {}) {
                Err(e @ evals::run::RunError::OldRules(_)) => {
                    assert!(e.to_string().contains("new run directory"), "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
        for r in &records {
            let p = problems.iter().find(|p| p.id == r.problem).unwrap();
            assert_eq!(
                r.passed,
                evals::judges::judge_text(&p.check, &r.text).passed(),
                "{r:?}"
            );
            let stopped = r.stop == evals::run::Stopped::StopString;
            match name {
                // Stopped at the first separator after some text: none past the leading ones.
                "plain" => {
                    let body = r.text.trim_start_matches(['.', '?', '!', ';', '\n']);
                    assert!(!body.contains(['.', '?', '!', ';', '\n']), "{:?}", r.text);
                }
                // The stop string is kept where it stopped the sample, never at the start.
                _ if stopped => {
                    let body = r.text.strip_suffix('.').expect("the stop string kept");
                    assert!(!body.is_empty() && !body.contains('.'), "{:?}", r.text);
                }
                // Not stopped: no stop string, or one at the start that turned them off.
                _ => assert!(
                    r.text.starts_with('.') || !r.text.contains('.'),
                    "{:?}",
                    r.text
                ),
            }
        }
    }
}
