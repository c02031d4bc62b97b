//! Latency of an imported model (release): imports `WEIGHTS` + `DESCRIPTION` (as written by
//! `bench/vision_torch.py --torchvision ARCH DIR`) into a temporary registry, then times one
//! image's forward pass and forward + Grad-CAM. Prints one `key value` per line. Called by
//! `bench/vision.sh`.
//!
//! `cargo run -p radsight-vision --release --example bench_imported -- WEIGHTS DESCRIPTION [ITERATIONS]`

use radsight_vision::import::import_model;
use radsight_vision::phantom::{PhantomConfig, generate};
use radsight_vision::{Registry, SaliencyMethod};
use std::path::PathBuf;
use std::time::Instant;

fn time<F: FnMut()>(iters: usize, mut f: F) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut s: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let weights = PathBuf::from(args.next().expect("WEIGHTS"));
    let description = PathBuf::from(args.next().expect("DESCRIPTION"));
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir().expect("temporary registry");
    let imported = import_model(&weights, &description, tmp.path()).expect("import");
    let model = Registry::open(tmp.path()).expect("open").load(&imported.id).expect("load");
    let size = model.input_size();
    let img = generate(&PhantomConfig { size, ..Default::default() }, 4242, 0).image;
    let x1 = model.input_tensor(&[&img]).unwrap();
    let net = model.network();
    let f1 = time(iters, || {
        net.forward(&x1).unwrap().to_vec2::<f32>().unwrap();
    });
    let g1 = time(iters, || {
        model.saliency(&img, 0, &SaliencyMethod::GradCam).unwrap();
    });
    println!("model {}", imported.id);
    println!("input {size}x{size}");
    println!("flops_per_image {}", 2 * net.macs(size));
    println!("forward_b1_ms {f1:.3}");
    println!("gradcam_b1_ms {g1:.3}");
    println!("gradcam_over_forward {:.2}", g1 / f1);
}
