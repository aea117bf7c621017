//! `compare` on the default model, on the native engine (and on llama.cpp in builds with it):
//! a model against itself, and against a requantized copy.

use evals::compare::{compare, CompareOptions};
use evals::generate::BackendKind;

#[test]
fn kl_divergence_is_near_zero_against_itself_and_grows_with_requantization() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let q4_0 = tmp.path().join("q4_0.gguf");
    quant::requant::requantize(
        &model,
        &q4_0,
        &engine::quantize::Target::Type(quant::GgmlType::Q4_0),
        2,
        &mut |_| {},
    )
    .unwrap();
    // Text we wrote: the README.
    let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut backends = vec![BackendKind::Native];
    if cfg!(feature = "llama-cpp") {
        backends.push(BackendKind::LlamaCpp);
    }
    for backend in backends {
        check_on(backend, &model, &q4_0, &text);
    }
    // The same file with exact activations against 8-bit ones: what the rounding alone does
    // (about 3.4e-3 nats per token on this model).
    let opts = CompareOptions {
        ctx: 128,
        chunks: Some(4),
        threads: Some(2),
        activations: engine::Activations::Exact,
        ..Default::default()
    };
    let r = compare(&model, std::slice::from_ref(&model), &text, &opts).unwrap();
    let kld = r.models[0].summary.kld.0;
    assert!((1e-3..1e-2).contains(&kld), "{kld}");
}

fn check_on(backend: BackendKind, model: &std::path::Path, q4_0: &std::path::Path, text: &[u8]) {
    let opts = CompareOptions {
        ctx: 128,
        chunks: Some(4),
        threads: Some(2),
        backend,
        ..Default::default()
    };
    let r = compare(
        model,
        &[model.to_path_buf(), q4_0.to_path_buf()],
        text,
        &opts,
    )
    .unwrap();
    assert_eq!(r.chunks, 4);
    assert_eq!(r.scored, 4 * 63);
    let same = &r.models[0].summary;
    let q = &r.models[1].summary;
    // Against itself only llama.cpp's uint16 encoding of the reference is left.
    assert!(same.kld.0 < 1e-4, "{backend:?}: {:?}", same.kld);
    assert!(same.same_top.0 > 0.99, "{:?}", same.same_top);
    assert!((same.ppl_q.0 / same.ppl_base.0 - 1.0).abs() < 1e-3);
    // Q4_1 → Q4_0 loses information.
    assert!(q.kld.0 > 1e-3 && q.kld.0 > 20.0 * same.kld.0, "{:?}", q.kld);
    assert!(q.ppl_q.0.is_finite() && q.ppl_q.0 > 1.0);
    assert!(r.render().contains("Mean    KLD"));

    // Text shorter than one chunk is an error, not an empty report.
    let short = compare(model, &[model.to_path_buf()], b"too short", &opts);
    assert!(short.is_err());
}
