//! The test nodule segmenter: trained here for a few hundred steps on phantoms with their masks,
//! exported as MONAI-named safetensors, imported like any site's U-Net, and measured on held-out
//! phantoms (a seed training never saw): Dice ≥ 0.8 on those that hold a nodule.

use radsight_vision::import::import_model;
use radsight_vision::segment_train::{SegmenterTraining, dice, held_out_dice, train_segmenter};
use radsight_vision::{LoadedModel, Registry};

#[test]
fn a_unet_trained_on_phantom_masks_segments_held_out_nodules_with_dice_above_0_8() {
    let training = SegmenterTraining::default();
    let started = std::time::Instant::now();
    let trained = train_segmenter(&training, |line| println!("{line}")).unwrap();
    println!("trained in {:.1} s, final loss {:.4}", started.elapsed().as_secs_f64(), trained.final_loss);

    let tmp = tempfile::tempdir().unwrap();
    let (weights, description) = (tmp.path().join("w.safetensors"), tmp.path().join("d.toml"));
    trained.save(&weights).unwrap();
    std::fs::write(&description, trained.description("test-nodule-unet", training.phantom.size)).unwrap();
    let registry_dir = tmp.path().join("models");
    std::fs::create_dir_all(&registry_dir).unwrap();
    let imported = import_model(&weights, &description, &registry_dir).expect("the trained weights import as a basic_unet");
    let registry = Registry::open(&registry_dir).unwrap();
    let Ok(LoadedModel::Segmenter(segmenter)) = registry.load_any(&imported.id) else { panic!("a segmenter") };

    let (mean, n) = held_out_dice(&segmenter, &training.phantom, training.seed + 7, 80).unwrap();
    println!("held-out Dice {mean:.3} over {n} phantoms with a nodule");
    assert!(n >= 40, "enough positives scored: {n}");
    assert!(mean >= 0.8, "mean Dice {mean:.3} < 0.8 over {n} held-out phantoms");
}

#[test]
fn dice_counts_the_overlap_of_two_masks() {
    assert_eq!(dice(&[true, true, false, false], &[true, false, true, false]), 0.5);
    assert_eq!(dice(&[false; 4], &[false; 4]), 1.0);
    assert_eq!(dice(&[true, false], &[false, true]), 0.0);
}
