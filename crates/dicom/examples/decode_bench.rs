//! Times `radsight_dicom::decode` per file, for `bench/dicom_decode.sh` (which compares pydicom).
//!
//! Run: `cargo run --release -p radsight-dicom --example decode_bench -- N FILE...`
//! Prints one line per file: `name<TAB>mean_ms<TAB>min_ms` over N decodes from memory (files
//! over 1 MB: N / 20, at least 3), after one warm-up decode. Also decodes + windows +
//! letterboxes to 128 (`+letterbox` lines), the whole preprocessing a model call needs.
//!
//! `decode_bench peak FILE` decodes FILE once and prints the process's peak RSS (VmHWM, kB).

use std::time::Instant;

use radsight_dicom::{DecodeLimits, decode, letterbox};

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().expect("usage: decode_bench N FILE... | decode_bench peak FILE");
    if first == "peak" {
        let path = args.next().expect("decode_bench peak FILE");
        let bytes = std::fs::read(&path).expect("read file");
        let img = decode(&bytes, &DecodeLimits::default()).expect("decodes");
        std::hint::black_box(&img);
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
            .expect("VmHWM");
        println!("{hwm}");
        return;
    }
    let n_all: u32 = first.parse().expect("usage: decode_bench N FILE...");
    for path in args {
        let bytes = std::fs::read(&path).expect("read file");
        let n = if bytes.len() > 1 << 20 { (n_all / 20).max(3) } else { n_all };
        let name = std::path::Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
        let limits = DecodeLimits::default();
        decode(&bytes, &limits).expect("decodes");
        let time = |f: &dyn Fn()| {
            let mut times = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                f();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let mean = times.iter().sum::<f64>() / f64::from(n);
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            (mean, min)
        };
        let (mean, min) = time(&|| {
            std::hint::black_box(decode(&bytes, &limits).unwrap());
        });
        println!("{name}\t{mean:.4}\t{min:.4}");
        let (mean, min) = time(&|| {
            let img = decode(&bytes, &limits).unwrap();
            let frame = img.normalised_frame(img.default_frame()).unwrap();
            std::hint::black_box(letterbox(&frame, 128));
        });
        println!("{name}+letterbox\t{mean:.4}\t{min:.4}");
    }
}
