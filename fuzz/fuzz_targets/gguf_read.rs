//! Fuzz the GGUF reader: arbitrary bytes either fail to parse with an error or parse into a
//! file whose every tensor view lies inside the input and dequantizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = Gguf::from_bytes(data) {
        let _ = file.metadata().architecture();
        for t in file.tensors() {
            assert_eq!(t.data.len() as u64, t.info.size);
            // Dequantizing is bounded by the input size, which libFuzzer keeps small.
            let x = t.to_f32().expect("validated tensors dequantize");
            assert_eq!(x.len() as u64, t.info.n_elements());
        }
    }
});
