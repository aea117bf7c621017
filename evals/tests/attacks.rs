//! The program judge against programs that try to escape or forge: `tests/data/attacks.jsonl`
//! is a HumanEval-format task file whose `test` fields carry the attacks (early exits, a
//! daemon that rewrites later judgements' programs, a daemon holding the output pipes, a
//! program that never ends, filling `/dev/shm`, leaving files in `/tmp`, reading the run's
//! `samples.jsonl`, the task file and the source tree, a Unix socket, the network, a fork bomb,
//! a memory hog). Each `check` passes only if its attack worked, so every verdict but the
//! sanity problem's must be a failure; each judgement must end within its wall-clock limit plus
//! a small margin, and nothing may be left behind: no process, no file in the machine's
//! `/tmp`, `/var/tmp` or `/dev/shm`, no file written by an escaped daemon.
//!
//! The suite runs as this process's user (root in CI) and, when that is root, once more as an
//! unprivileged user (the test binary re-runs itself under `setpriv`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evals::judges::{judge_program, Isolation, Limits, Sandbox, Verdict};

const MARGIN: Duration = Duration::from_millis(2500);

/// The task file with this machine's paths written in.
fn task_file(dir: &Path, run: &Path, sock: &Path, port: u16, mark: &Path) -> PathBuf {
    let template = include_str!("data/attacks.jsonl");
    let task = dir.join("attacks.jsonl");
    let text = template
        .replace("@RUN@", &run.display().to_string())
        .replace("@SECRET@", "secret-3f1c")
        .replace("@TASK@", &task.display().to_string())
        .replace("@SRC@", env!("CARGO_MANIFEST_DIR"))
        .replace("@SOCK@", &sock.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@MARK@", &mark.display().to_string())
        .replace("@JUDGE_TMP@", &std::env::temp_dir().display().to_string());
    std::fs::write(&task, text).unwrap();
    task
}

/// What the task file's line for `id` expects (`expect`: pass, timeout; default a failure).
fn expected(id: &str) -> &'static str {
    let line = include_str!("data/attacks.jsonl")
        .lines()
        .find(|l| l.contains(&format!("\"{id}\"")))
        .unwrap();
    if line.contains("\"expect\": \"pass\"") {
        "pass"
    } else if line.contains("\"expect\": \"timeout\"") {
        "timeout"
    } else {
        "no pass"
    }
}

/// Processes of the machine running under a sandbox uid (200000 and up) or, for the
/// unprivileged run, as `user`.
fn leftover_processes(user: Option<u32>) -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-eo", "uid=,pid=,stat=,comm="])
        .output()
        .unwrap();
    let me = std::process::id();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let uid = f.first().and_then(|u| u.parse::<u32>().ok());
            let pid = f.get(1).and_then(|p| p.parse::<u32>().ok());
            uid.is_some_and(|u| u >= 200_000 || Some(u) == user)
                && pid != Some(me)
                && f.get(3) != Some(&"ps")
        })
        .map(str::to_owned)
        .collect()
}

fn leftover_files() -> Vec<PathBuf> {
    ["/tmp", "/var/tmp", "/dev/shm"]
        .iter()
        .flat_map(|d| {
            [
                Path::new(d).join("passuntil-attack-leftover"),
                Path::new(d).join("passuntil-attack-shm"),
            ]
        })
        .filter(|p| p.exists())
        .collect()
}

fn suite() {
    let user = (!is_root()).then(current_uid);
    let sandbox = Sandbox::new(Limits::default()).expect("sandbox available");
    let want = if is_root() {
        Isolation::NamespacesOwnUid
    } else {
        Isolation::UserNamespaces
    };
    assert_eq!(
        *sandbox.isolation(),
        want,
        "this machine allows namespaces: {}",
        sandbox.isolation().describe()
    );
    let work = tempfile::Builder::new()
        .prefix("attacks-")
        .tempdir()
        .unwrap();
    let run = work.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("samples.jsonl"), "{\"text\": \"secret-3f1c\"}\n").unwrap();
    let sock = work.path().join("judge.sock");
    let unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    unix.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let mark = work.path().join("escaped.txt");
    let task = task_file(
        work.path(),
        &run,
        &sock,
        tcp.local_addr().unwrap().port(),
        &mark,
    );
    let problems = evals::tasks::load(&task, evals::tasks::Format::Humaneval).unwrap();
    assert!(problems.len() >= 20);
    let files_before = leftover_files();
    let mut failures = Vec::new();
    for p in &problems {
        let t = Instant::now();
        let v = judge_program(&sandbox, p, "    return 1\n");
        let took = t.elapsed();
        let ok = match expected(&p.id) {
            "pass" => v == Verdict::Pass,
            "timeout" => v == Verdict::Timeout,
            _ => !v.passed() && !matches!(v, Verdict::SandboxError { .. }),
        };
        eprintln!("{:40} {:?} in {:.2} s", p.id, v, took.as_secs_f64());
        if !ok {
            failures.push(format!("{}: {v:?}", p.id));
        }
        if took > sandbox.limits.wall + MARGIN {
            failures.push(format!("{} took {took:?}", p.id));
        }
    }
    // Give an escaped daemon time to act, then look for its traces.
    std::thread::sleep(Duration::from_millis(500));
    assert!(unix.accept().is_err(), "a program reached the Unix socket");
    assert!(tcp.accept().is_err(), "a program reached the TCP port");
    assert!(!mark.exists(), "a daemon wrote outside the sandbox");
    assert_eq!(
        leftover_processes(user),
        Vec::<String>::new(),
        "processes left behind"
    );
    let new_files: Vec<PathBuf> = leftover_files()
        .into_iter()
        .filter(|f| !files_before.contains(f))
        .collect();
    assert!(new_files.is_empty(), "files left behind: {new_files:?}");
    assert!(failures.is_empty(), "not contained: {failures:#?}");
}

fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// One test, so that the run as root and the unprivileged run do not overlap.
#[test]
fn every_attack_is_contained() {
    suite();
    if std::env::var_os("PASSUNTIL_ATTACKS_CHILD").is_some() || !is_root() {
        return;
    }
    // Again as an unprivileged user: the same binary, this test only, under setpriv. The
    // user needs a temp dir it can write and a binary it can run.
    let exe = std::env::current_exe().unwrap();
    let copy_dir = tempfile::Builder::new()
        .prefix("attacks-bin-")
        .tempdir()
        .unwrap();
    let copy = copy_dir.path().join("attacks");
    std::fs::copy(&exe, &copy).unwrap();
    let open = |p: &Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(copy_dir.path(), 0o755);
    open(&copy, 0o755);
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--reset-env",
        ])
        .arg(&copy)
        .args(["--exact", "every_attack_is_contained", "--nocapture"])
        .env("PASSUNTIL_ATTACKS_CHILD", "1")
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the suite as an unprivileged user:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
