//! Fuzz target: arbitrary bytes through the ONNX loader. Loading may fail, but
//! must never panic, hang or allocate without bound; what loads must verify,
//! analyse, and round-trip byte-stably.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shrink_graph::Model;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data) {
        let _ = shrink_graph::summarize(&model);
        let once = model.to_bytes();
        let again = Model::from_bytes(&once).expect("a saved model must load again");
        assert_eq!(once, again.to_bytes(), "round trip is not byte-stable");
    }
});
