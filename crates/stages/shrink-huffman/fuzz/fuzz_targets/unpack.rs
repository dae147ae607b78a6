//! Fuzz target: arbitrary bytes through `.shrink` unpacking. Unpacking may
//! fail, but must never panic, hang or allocate without bound (the output is
//! capped at 64 MiB here); what unpacks must pack and unpack again to the
//! same ONNX bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shrink_huffman::{PackOptions, UnpackOptions};

fuzz_target!(|data: &[u8]| {
    let opts = UnpackOptions { max_output_bytes: 64 << 20 };
    if let Ok(proto) = shrink_huffman::unpack_proto(data, &opts) {
        let onnx = proto.encode_to_vec();
        if onnx.len() > 1 << 20 {
            return; // packing tries many encodings: keep each run fast
        }
        let packed = shrink_huffman::pack_proto(proto, &PackOptions::default()).expect("an unpacked model packs");
        let again =
            shrink_huffman::unpack_proto(&packed.bytes, &UnpackOptions::default()).expect("a packed model unpacks");
        assert_eq!(again.encode_to_vec(), onnx, "pack → unpack is not byte-stable");
    }
});
