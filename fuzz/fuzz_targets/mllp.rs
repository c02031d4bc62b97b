//! Fuzz target: MLLP deframing (`mllp::Deframer`) of a byte stream as the listener reads
//! it. The first two bytes choose the message size limit (1..=4096) and a read-size pattern;
//! the rest is the stream, fed once whole and once in reads of varying size.
//!
//! Invariants: no panic; the frames do not depend on where the reads split the stream; no
//! frame is longer than the limit (a `TooLarge` head no longer than the limit nor 2048 bytes);
//! frames are found only where a start byte was; and round trip: messages holding no 0x0B and
//! no 0x1C, `mllp::frame`d and concatenated, come back exactly, whatever the read sizes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::mllp::run(data));
