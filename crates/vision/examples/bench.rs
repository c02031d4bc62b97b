//! Latency of the committed model in release mode: forward and forward + Grad-CAM per image,
//! single image and batch, plus FLOPs and achieved GFLOP/s. Prints one `key value` per line.
//! Called by `bench/vision.sh`.
//!
//! `cargo run -p radsight-vision --release --example bench -- [MODELS_DIR] [ITERATIONS] [REF_JSON]`
//!
//! With `REF_JSON`, also writes one input image and its logits there, so the PyTorch side can
//! check that it computes the same function.

use radsight_vision::phantom::{PhantomConfig, generate};
use radsight_vision::rng::Pcg32;
use radsight_vision::road::{noisy_linear_impute, removal_masks};
use radsight_vision::{AnalyzeOptions, Registry, RoadOptions, SaliencyMethod};
use std::time::Instant;

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(iters: usize, mut f: F) -> f64 {
    for _ in 0..3 {
        f();
    }
    median_ms(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models".into());
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let model = Registry::open(&dir).expect("open registry").load("radsight-phantom-cxr").expect("load model");
    let size = model.input_size();
    let cfg = PhantomConfig { size, ..Default::default() };
    let imgs: Vec<_> = (0..8).map(|i| generate(&cfg, 4242, i).image).collect();
    let refs: Vec<_> = imgs.iter().collect();
    let x1 = model.input_tensor(&refs[..1]).unwrap();
    let x8 = model.input_tensor(&refs).unwrap();
    let net = model.network();

    let f1 = time(iters, || {
        net.forward(&x1).unwrap().to_vec2::<f32>().unwrap();
    });
    let f8 = time(iters, || {
        net.forward(&x8).unwrap().to_vec2::<f32>().unwrap();
    });
    let g1 = time(iters, || {
        model.saliency(&imgs[0], 0, &SaliencyMethod::GradCam).unwrap();
    });
    let g8 = time(iters, || {
        for img in &imgs {
            model.saliency(img, 0, &SaliencyMethod::GradCam).unwrap();
        }
    });
    let a1 = time(iters.div_ceil(5), || {
        model.analyze(&imgs[0], &Default::default()).unwrap();
    });
    // The analysis without ROAD, and ROAD alone (its 36 sparse solves and 38 forward passes),
    // to show where an analysis spends its time.
    let no_road = AnalyzeOptions { road: None, ..Default::default() };
    let a1_no_road = time(iters.div_ceil(5), || {
        model.analyze(&imgs[0], &no_road).unwrap();
    });
    let map = model.saliency(&imgs[0], 0, &SaliencyMethod::GradCam).unwrap().map;
    let road = time(iters.div_ceil(5), || {
        model.road(&x1, 0, &map, &RoadOptions::default()).unwrap();
    });
    // ROAD's 18 imputations of the map alone (its masks at every percentile, most and least
    // relevant first), on one thread: the linear solves without the forward passes.
    let pixels: Vec<f32> = x1.flatten_all().unwrap().to_vec1().unwrap();
    let masks = removal_masks(&map, &RoadOptions::default().percentiles);
    let channels = pixels.len() / (size * size);
    let imputations = time(iters.div_ceil(5), || {
        for keep in &masks {
            noisy_linear_impute(&pixels, channels, size, size, keep, 0.01, &mut Pcg32::new(0, 0));
        }
    });
    let flops = 2 * net.macs(size);
    println!("model {} {}", model.card().id, model.card().version);
    println!("input {size}x{size}");
    println!("threads {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("flops_per_image {flops}");
    println!("forward_b1_ms {f1:.3}");
    println!("forward_b8_ms {f8:.3}");
    println!("forward_b8_per_image_ms {:.3}", f8 / 8.0);
    println!("gradcam_b1_ms {g1:.3}");
    println!("gradcam_8_sequential_per_image_ms {:.3}", g8 / 8.0);
    println!("analyze_b1_ms {a1:.3}");
    println!("analyze_b1_without_road_ms {a1_no_road:.3}");
    println!("road_map_and_random_ms {road:.3}");
    println!("road_map_imputations_one_thread_ms {imputations:.3}");
    println!("gflops_b1 {:.2}", flops as f64 / (f1 * 1e6));
    println!("gflops_b8 {:.2}", 8.0 * flops as f64 / (f8 * 1e6));
    if let Some(path) = args.next() {
        let logits = model.logits(&refs[..1]).unwrap().remove(0);
        let json = serde_json::json!({ "input": imgs[0].data(), "logits": logits });
        std::fs::write(path, json.to_string()).expect("write reference");
    }
}
