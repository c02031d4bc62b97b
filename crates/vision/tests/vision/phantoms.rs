use radsight_vision::phantom::{PHANTOM_LABELS, PhantomConfig, generate};

#[test]
fn the_same_seed_and_index_give_an_identical_phantom() {
    let cfg = PhantomConfig::default();
    for i in 0..5 {
        assert_eq!(generate(&cfg, 42, i), generate(&cfg, 42, i));
    }
    assert_ne!(generate(&cfg, 42, 0).image, generate(&cfg, 43, 0).image);
    assert_ne!(generate(&cfg, 42, 0).image, generate(&cfg, 42, 1).image);
}

#[test]
fn masks_are_non_empty_exactly_when_the_finding_is_present_and_pixels_stay_in_range() {
    let cfg = PhantomConfig::default();
    let mut seen = [0usize; 2];
    for i in 0..60 {
        let p = generate(&cfg, 9, i);
        assert!(p.image.data().iter().all(|v| (0.0..=1.0).contains(v)));
        for l in 0..PHANTOM_LABELS.len() {
            assert_eq!(p.labels[l], p.masks[l].iter().any(|&m| m), "phantom {i} label {l}");
            seen[l] += p.labels[l] as usize;
        }
    }
    assert!(seen.iter().all(|&n| n > 10 && n < 50), "both findings occur with about 50% prevalence: {seen:?}");
}
