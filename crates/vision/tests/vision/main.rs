//! radsight-vision integration tests, one binary. The model-dependent tests use the committed
//! model in `models/radsight-phantom-cxr` and held-out phantoms generated with seeds that are
//! not the training, calibration or test seeds in its card.

// Tests index parallel arrays (labels, masks, counts) by label; index loops read clearer there.
#![allow(clippy::needless_range_loop)]

mod helpers;
mod import;
mod oracle;
mod parity;
mod phantoms;
mod quality;
mod registry;
mod resnet;
mod segmenter;
