//! The program judge contains hostile candidates: an infinite loop, a memory hog, a fork bomb,
//! an attempt to delete the user's files, a network connection, a huge file and a segfault.
//! Each gives its own verdict quickly and leaves the machine as it was.

use std::time::{Duration, Instant};

use evals::judges::{program_source, Isolation, Limits, Sandbox, Verdict};
use evals::tasks::{Check, Problem, Prompt};

/// The tests run one at a time so that "no process left behind" is checked on a quiet machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Guarded {
    sandbox: Sandbox,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Guarded {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                sandbox_processes(),
                Vec::<String>::new(),
                "processes left behind"
            );
        }
    }
}

/// Processes running under the sandbox's uids (200000 and up).
fn sandbox_processes() -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-eo", "uid=,pid=,comm="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|u| u.parse::<u32>().ok())
                .is_some_and(|u| u >= 200_000)
        })
        .map(str::to_owned)
        .collect()
}

fn sandbox() -> Guarded {
    let lock = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let sandbox = Sandbox::new(Limits {
        wall: Duration::from_secs(3),
        ..Limits::default()
    })
    .expect("sandbox available");
    assert_ne!(
        *sandbox.isolation(),
        Isolation::LimitsOnly,
        "this machine allows network namespaces"
    );
    Guarded {
        sandbox,
        _lock: lock,
    }
}

#[test]
fn passing_and_failing_programs() {
    let s = sandbox();
    let problem = Problem {
        id: "HumanEval/x".into(),
        prompt: Prompt::Text("def add(a, b):\n".into()),
        check: Check::Program {
            test: "def check(f):\n    assert f(2, 3) == 5\n".into(),
            entry_point: "add".into(),
        },
        stop: Vec::new(),
    };
    let good = program_source(&problem, "    return a + b\n").unwrap();
    assert_eq!(s.run(&good).0, Verdict::Pass);
    let bad = program_source(&problem, "    return a - b\n").unwrap();
    match s.run(&bad).0 {
        Verdict::Fail { detail } => assert!(detail.contains("AssertionError"), "{detail}"),
        v => panic!("{v:?}"),
    }
    let syntax = program_source(&problem, "    return a +\n").unwrap();
    assert!(matches!(s.run(&syntax).0, Verdict::Fail { .. }));
}

#[test]
fn infinite_loop_times_out() {
    let s = sandbox();
    let t = Instant::now();
    assert_eq!(s.run("while True:\n    pass\n").0, Verdict::Timeout);
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    // Sleeping uses no CPU: the wall clock stops it.
    let t = Instant::now();
    assert_eq!(s.run("import time\ntime.sleep(60)\n").0, Verdict::Timeout);
    assert!(t.elapsed() < Duration::from_secs(6));
}

#[test]
fn memory_hog_is_stopped() {
    let s = sandbox();
    let (v, _) = s.run("x = bytearray(8 << 30)\nprint(len(x))\n");
    assert!(
        matches!(v, Verdict::Fail { ref detail } if detail.contains("MemoryError")),
        "{v:?}"
    );
}

#[test]
fn fork_bomb_is_contained() {
    let s = sandbox();
    let t = Instant::now();
    let (v, _) = s.run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    );
    assert!(!v.passed(), "{v:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The machine still runs programs afterwards.
    assert_eq!(s.run("print(1)").0, Verdict::Pass);
}

#[test]
fn files_outside_the_sandbox_are_out_of_reach() {
    let s = sandbox();
    let outside = tempfile::tempdir().unwrap();
    let sentinel = outside.path().join("keep.txt");
    std::fs::write(&sentinel, "precious").unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prog = format!(
        "import os, shutil\nshutil.rmtree(os.path.expanduser('~'), ignore_errors=True)\nshutil.rmtree({:?}, ignore_errors=True)\nshutil.rmtree({:?}, ignore_errors=True)\nopen({:?}, 'w').write('gone')\n",
        home,
        outside.path().display().to_string(),
        sentinel.display().to_string()
    );
    let (v, _) = s.run(&prog);
    assert!(!v.passed(), "writing outside the sandbox must fail: {v:?}");
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "precious");
    assert!(std::path::Path::new(&home).exists());
}

#[test]
fn no_network() {
    let s = sandbox();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let prog =
        format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n");
    let (v, _) = s.run(&prog);
    assert!(matches!(v, Verdict::Fail { .. }), "{v:?}");
}

#[test]
fn file_size_and_crashes() {
    let s = sandbox();
    let (v, _) = s.run("open('big', 'wb').write(b'x' * (64 << 20))\n");
    assert!(!v.passed(), "{v:?}");
    let (v, _) = s.run("import ctypes\nctypes.string_at(0)\n");
    assert!(matches!(v, Verdict::Crash { .. }), "{v:?}");
}
