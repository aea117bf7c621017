//! The `pass-until` binary: `inspect` on the default model (fetched on first use), `models`,
//! and clear errors for bad arguments and bad files.

use std::process::Command;

fn pass_until(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pass-until"))
        .args(args)
        .output()
        .expect("run pass-until");
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        // A crash by signal leaves stderr empty: the status is what says what happened.
        stderr.push_str(&format!("\n[pass-until {}]", out.status));
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn inspect_default_model_json() {
    let (ok, stdout, stderr) = pass_until(&["inspect", "smollm2-135m", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(v["summary"]["architecture"], "llama");
    assert_eq!(v["summary"]["block_count"], 30);
    assert_eq!(v["summary"]["embedding_length"], 576);
    assert_eq!(v["summary"]["head_count"], 9);
    assert_eq!(v["summary"]["head_count_kv"], 3);
    assert_eq!(v["summary"]["vocab_size"], 49152);
    let emb = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(emb["type"], "q8_0");
    assert_eq!(emb["shape"], serde_json::json!([576, 49152]));
    let totals: Vec<(String, u64)> = v["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_owned(),
                t["tensors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [("q4_1".into(), 210), ("q8_0".into(), 1), ("f32".into(), 61)]
    );

    // The text form has the same facts.
    let (ok, text, _) = pass_until(&["inspect", "smollm2-135m"]);
    assert!(ok);
    assert!(text.contains("tensors (272):"), "{text}");
    assert!(text.contains("576 × 49152"));
    assert!(text.contains("(49152 items)"));
}

#[test]
fn models_list_names_the_known_models() {
    let (ok, stdout, stderr) = pass_until(&["models", "list", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smollm2-135m", "gemma3-270m"]);
    let (ok, text, _) = pass_until(&["models"]);
    assert!(ok);
    assert!(text.contains("smollm2-135m (default)"), "{text}");
}

#[test]
fn bad_arguments_and_files_give_clear_errors() {
    let (ok, _, stderr) = pass_until(&["inspect", "no-such-model"]);
    assert!(!ok);
    assert!(
        stderr.contains("not a file and not a known model"),
        "{stderr}"
    );
    assert!(stderr.contains("smollm2-135m"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(
        &bad,
        b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    let (ok, _, stderr) = pass_until(&["inspect", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("bad.gguf"), "{stderr}");
    assert!(stderr.contains("tensor count"), "{stderr}");

    let (ok, _, stderr) = pass_until(&["models", "fetch", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("unknown model 'nope'"), "{stderr}");

    let out = dir.path().join("out.gguf");
    let (ok, _, stderr) = pass_until(&[
        "quantize",
        bad.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "iq4_nl",
    ]);
    assert!(!ok);
    assert!(stderr.contains("unknown target 'iq4_nl'"), "{stderr}");
    let (ok, _, stderr) = pass_until(&[
        "quantize",
        bad.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q4_0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("tensor count"), "{stderr}");
    assert!(!out.exists());

    let (ok, _, stderr) = pass_until(&["report", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("run.json"), "{stderr}");

    // `scale` on something that is not a run, with sizes that are not sizes.
    let d = dir.path().to_str().unwrap();
    let (ok, _, stderr) = pass_until(&["scale", d, "--x", "1"]);
    assert!(!ok);
    assert!(stderr.contains("run.json"), "{stderr}");
    let (ok, _, stderr) = pass_until(&["scale", d, "--x", "one"]);
    assert!(!ok);
    assert!(stderr.contains("'one'"), "{stderr}");
    let (ok, _, stderr) = pass_until(&["scale", d, "--axis", "flops"]);
    assert!(!ok);
    assert!(
        stderr.contains("params") && stderr.contains("bpw"),
        "{stderr}"
    );
}

#[test]
fn quantize_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    let (ok, stdout, stderr) = pass_until(&[
        "quantize",
        "smollm2-135m",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "-t",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("bits per weight"), "{stdout}");
    let f = quant::gguf::GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor("blk.0.ffn_up.weight").unwrap().ty(),
        quant::GgmlType::Q8_0
    );
}

#[test]
fn generate_on_llama_cpp() {
    let args = [
        "generate",
        "-p",
        "The capital of France is",
        "--temp",
        "0",
        "--max-tokens",
        "8",
        "--backend",
        "llama-cpp",
        "--json",
    ];
    let (ok, stdout, stderr) = pass_until(&args);
    if cfg!(feature = "llama-cpp") {
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["backend"], "llama.cpp");
        let text = v["samples"][0]["text"].as_str().unwrap();
        assert!(text.contains("Paris"), "{text}");
        // Sampling with a seed is reproducible; three samples share the prompt.
        let sampled = [
            "generate",
            "-p",
            "Once upon a time",
            "-n",
            "3",
            "--seed",
            "5",
            "--max-tokens",
            "12",
            "--json",
        ];
        let (ok, a, _) = pass_until(&sampled);
        let (_, b, _) = pass_until(&sampled);
        assert!(ok);
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&a).unwrap(),
            serde_json::from_str(&b).unwrap(),
        );
        assert_eq!(a["samples"], b["samples"]);
        assert_eq!(a["samples"].as_array().unwrap().len(), 3);
    } else {
        assert!(!ok);
        assert!(stderr.contains("--features llama-cpp"), "{stderr}");
    }
    // The native engine needs no llama.cpp: greedy, it knows the capital of France.
    let (ok, stdout, stderr) = pass_until(&[
        "generate",
        "-p",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--temp",
        "0",
        "--backend",
        "native",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Paris"), "{stdout}");
}

#[test]
fn generate_with_a_banned_token_and_penalties() {
    // Greedy, the native engine answers " Paris" (token 7042); banned, it must say something
    // else, and the sampling settings reach the engine from the command line.
    let (ok, stdout, stderr) = pass_until(&[
        "generate",
        "-p",
        "The capital of France is",
        "--max-tokens",
        "6",
        "--temp",
        "0",
        "--backend",
        "native",
        "--logit-bias",
        "7042=-inf",
        "--repeat-penalty",
        "1.3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let tokens: Vec<u64> = v["samples"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(tokens.len(), 6);
    assert!(!tokens.contains(&7042), "{tokens:?}");
    // Bad values are refused with the flag named.
    let (ok, _, stderr) = pass_until(&["generate", "-p", "x", "--logit-bias", "seven=1"]);
    assert!(!ok);
    assert!(stderr.contains("--logit-bias"), "{stderr}");
    let (ok, _, stderr) = pass_until(&[
        "generate",
        "-p",
        "x",
        "--backend",
        "native",
        "--typical-p",
        "0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("typical_p"), "{stderr}");
}

#[test]
fn generate_stops_at_a_stop_string() {
    // Greedy: " Paris" first. With "aris" as a stop string the sample ends on that token and
    // its text is cut before the stop string.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "-p",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--temp",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = pass_until(&args);
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        v["samples"][0].clone()
    };
    let free = run(&[]);
    assert!(
        free["text"].as_str().unwrap().starts_with(" Paris"),
        "{free}"
    );
    assert_eq!(free["tokens"].as_array().unwrap().len(), 8);
    let stopped = run(&["--stop", "aris", "--stop", "never"]);
    assert_eq!(stopped["stop"], "stop_string", "{stopped}");
    assert_eq!(stopped["text"], " P", "{stopped}");
    assert_eq!(stopped["tokens"], serde_json::json!([free["tokens"][0]]));
}

#[test]
fn score_and_tokenize() {
    let (ok, stdout, stderr) = pass_until(&["tokenize", "The capital of France is", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);

    let score = |backend: &str| {
        let (ok, stdout, stderr) = pass_until(&[
            "score",
            "-p",
            "The capital of France is",
            "-c",
            " Paris, the city of lights.",
            "--top",
            "2",
            "--backend",
            backend,
            "--json",
        ]);
        (ok, stdout, stderr)
    };
    let (ok, stdout, stderr) = score("native");
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["context_tokens"].as_array().unwrap().len(), 5);
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens[0]["piece"], " Paris");
    assert_eq!(tokens[0]["greedy"], true);
    assert_eq!(tokens[0]["top"][0]["token"], tokens[0]["token"]);
    assert_eq!(tokens[0]["top"].as_array().unwrap().len(), 2);
    let sum: f64 = tokens.iter().map(|t| t["logprob"].as_f64().unwrap()).sum();
    let total = v["logprob"].as_f64().unwrap();
    assert!((sum - total).abs() < 1e-9 && total < 0.0, "{sum} {total}");
    let greedy_all = tokens.iter().all(|t| t["greedy"] == true);
    assert_eq!(v["is_greedy"], greedy_all);
    if cfg!(feature = "llama-cpp") {
        let (ok, other, stderr) = score("llama-cpp");
        assert!(ok, "{stderr}");
        let o: serde_json::Value = serde_json::from_str(&other).unwrap();
        assert_eq!(o["backend"], "llama.cpp");
        assert_eq!(o["tokens"].as_array().unwrap().len(), tokens.len());
        // The two engines agree up to their activation rounding.
        let theirs = o["logprob"].as_f64().unwrap();
        assert!(
            (theirs - total).abs() < 0.1 * total.abs(),
            "{theirs} vs {total}"
        );
    }
    // Nothing before the continuation to condition on: a clear error.
    let (ok, _, stderr) = pass_until(&["score", "-p", "", "-c", "x", "--backend", "native"]);
    assert!(!ok);
    assert!(stderr.contains("context token"), "{stderr}");
}

#[test]
fn probe_reports_entropy_outliers_and_the_logit_lens() {
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let (ok, stdout, stderr) = pass_until(&[
        "probe",
        "--text",
        text,
        "--ctx",
        "64",
        "--chunks",
        "2",
        "--lens",
        "The capital of France is",
        "--top",
        "3",
        "-t",
        "2",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["tokens"], 128);
    let me = &v["matrix_entropy"];
    assert_eq!(me["dim"], 576);
    let h = me["entropy"].as_f64().unwrap();
    assert!(h > 0.0 && h <= (576f64).ln(), "{h}");
    let sites = v["outliers"].as_array().unwrap();
    assert_eq!(sites.len(), 3);
    for s in sites {
        assert_eq!(s["per_layer"].as_array().unwrap().len(), 30);
        // The union reading never finds fewer dimensions than the pooled one.
        assert!(s["dims"].as_array().unwrap().len() >= s["dims_pooled"].as_array().unwrap().len());
    }
    let lens = v["logit_lens"]["layers"].as_array().unwrap();
    assert_eq!(lens.len(), 30);
    // At the top, the lens is the model's own prediction.
    assert_eq!(lens[29]["top"][0][1], " Paris");
    let p = lens[29]["top"][0][2].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0);
    // A text too short to probe is an error, not a crash.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "x").unwrap();
    let (ok, _, stderr) = pass_until(&["probe", "--text", short.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("too few"), "{stderr}");
}

#[test]
fn hostile_sizes_are_clear_errors() {
    for (args, want) in [
        (
            &["generate", "-p", "x", "-n", "1000000000000"][..],
            "1000000000000",
        ),
        (
            &["generate", "-p", "x", "-t", "4294967295"][..],
            "4294967295",
        ),
        (
            &[
                "generate",
                "-p",
                "x",
                "--max-tokens",
                "18446744073709551615",
            ][..],
            "18446744073709551615",
        ),
        (
            &["run", "--task", "t.jsonl", "--out", "o", "--batch", "0"][..],
            "--batch",
        ),
    ] {
        let (ok, _, stderr) = pass_until(args);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains(want) && stderr.contains("not in"),
            "{args:?}: {stderr}"
        );
    }
    // Past the trained context (8192 tokens for the default model), before generating.
    let (ok, _, stderr) = pass_until(&["generate", "-p", "x", "--max-tokens", "100000"]);
    assert!(!ok);
    assert!(stderr.contains("trained on"), "{stderr}");
    // A prompt no context could hold is refused before it is tokenized.
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("big.jsonl");
    let prompt = "word ".repeat(2 << 20);
    std::fs::write(
        &task,
        format!("{{\"id\": \"big\", \"prompt\": \"{prompt}\", \"target\": \"x\"}}\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, _, stderr) = pass_until(&[
        "run",
        "--task",
        task.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n",
        "1",
        "--k",
        "1",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("problem 'big': the prompt is 10485760 bytes"),
        "{stderr}"
    );
}

#[test]
fn a_second_run_in_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let all = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tasks/arithmetic.jsonl"
    ))
    .unwrap();
    let few: Vec<&str> = all.lines().filter(|l| l.starts_with('{')).take(4).collect();
    let task = dir.path().join("task.jsonl");
    std::fs::write(&task, few.join("\n") + "\n").unwrap();
    let out = dir.path().join("run");
    let args = [
        "run",
        "--task",
        task.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--r",
        "2",
        "--max-samples",
        "100",
        "--max-tokens",
        "8",
    ];
    let mut first = Command::new(env!("CARGO_BIN_EXE_pass-until"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = format!("pid {} on ", first.id());
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(out.join(".lock"))
        .unwrap_or_default()
        .starts_with(&pid)
    {
        assert!(
            t0.elapsed().as_secs() < 30,
            "the first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (ok, _, stderr) = pass_until(&args);
    let finished = first.wait().unwrap();
    assert!(!ok, "a second run went ahead");
    assert!(
        stderr.contains(&format!("in use by another pass-until ({pid}")),
        "{stderr}"
    );
    // The first run finished undisturbed (and released the lock cleanly: nothing is left
    // for a later run to take over), and its results read back whole.
    assert!(finished.success());
    assert_eq!(std::fs::read_to_string(out.join(".lock")).unwrap(), "");
    let (ok, stdout, stderr) = pass_until(&["report", out.to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 4);
}
