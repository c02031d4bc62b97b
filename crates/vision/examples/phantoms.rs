//! Writes a few phantoms (and their masks) as PNG files, to look at the synthetic data.
//!
//! `cargo run -p radsight-vision --example phantoms -- OUT_DIR [SEED] [COUNT]`

use radsight_vision::phantom::{PhantomConfig, generate};
use radsight_vision::render::grayscale_png;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "phantoms".into()));
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let count: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    std::fs::create_dir_all(&out).expect("create output folder");
    let cfg = PhantomConfig::default();
    for i in 0..count {
        let p = generate(&cfg, seed, i);
        let n = cfg.size;
        let png = grayscale_png(p.image.data(), n, n).expect("encode");
        std::fs::write(out.join(format!("phantom-{i}-{:?}.png", p.labels)), png).expect("write");
    }
}
