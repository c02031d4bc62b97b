//! Trains the shipped demonstration model `radsight-phantom-cxr` and writes it to a model folder.
//!
//! Run (release; about 12 minutes on 2 shared cores for the 1.1.0 settings):
//! `cargo run -p radsight-vision --release --example train -- [OUT_DIR] [--steps N] [--batch N] [--seed N]`
//! (experiments: `--test N --calibration N --lr X --widths 16,32,48,64 --strides 2,2,1,1`)
//! OUT_DIR defaults to `models/radsight-phantom-cxr`.

use radsight_vision::train::{TrainConfig, train};
use std::path::PathBuf;

fn list(v: Option<String>, name: &str) -> Vec<usize> {
    v.unwrap_or_default().split(',').map(|x| x.trim().parse().unwrap_or_else(|_| panic!("{name} needs a comma-separated list"))).collect()
}

fn main() {
    let mut config = TrainConfig::default();
    let mut out = PathBuf::from("models/radsight-phantom-cxr");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 { args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number")) };
        match a.as_str() {
            "--steps" => config.steps = num("--steps") as usize,
            "--batch" => config.batch_size = num("--batch") as usize,
            "--seed" => config.seed = num("--seed"),
            "--test" => config.test_images = num("--test") as usize,
            "--calibration" => config.calibration_images = num("--calibration") as usize,
            "--lr" => config.learning_rate = args.next().and_then(|v| v.parse().ok()).expect("--lr needs a number"),
            "--widths" => config.architecture.widths = list(args.next(), "--widths"),
            "--strides" => config.architecture.strides = list(args.next(), "--strides"),
            other => out = PathBuf::from(other),
        }
    }
    match train(&config, &out, |line| eprintln!("{line}")) {
        Ok(report) => {
            println!("wrote {} in {:.1} s (final loss {:.4})", out.display(), report.seconds, report.final_loss);
            for m in &report.card.validation.labels {
                println!(
                    "{}: AUROC {:.4}  sens {:.3} spec {:.3} @ {:.3}  ECE {:.4} (uncalibrated {:.4})",
                    m.label, m.auroc, m.sensitivity, m.specificity, m.threshold, m.ece, m.ece_uncalibrated
                );
            }
        }
        Err(e) => {
            eprintln!("training failed: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            std::process::exit(1);
        }
    }
}
