//! Fuzz target: `radsight_dicom::decode` on arbitrary bytes must return (an image or a typed
//! error) without panicking, aborting, hanging or allocating without bound. The limits are the
//! defaults, except a smaller pixel budget so that libFuzzer's RSS limit catches unbounded
//! allocation rather than a legitimately large image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radsight_dicom::{DecodeLimits, decode};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_pixel_bytes: 64 << 20,
        ..DecodeLimits::default()
    };
    if let Ok(image) = decode(data, &limits) {
        let _ = image.normalised_frame(image.default_frame());
    }
});
