//! The model registry: a folder of model folders, each with `model-card.toml`, the weights
//! file the card names, and optionally `weights.sha256` (`sha256sum` format).
//!
//! **Invariant:** a model's weights are used only after their SHA-256 matched the card. The
//! bytes are read once, hashed, and the same bytes are deserialised, so there is no window
//! between check and use. When `weights.sha256` exists it must agree with the card as well.

use crate::card::{CARD_FILE, ModelCard};
use crate::error::Error;
use crate::model::Model;
use crate::segment::Segmenter;
use candle_core::Device;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A model folder found by [`Registry::open`].
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    pub dir: PathBuf,
    pub card: ModelCard,
}

impl RegistryEntry {
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.card.weights.file)
    }
}

/// The models under one root folder, sorted by id.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    entries: Vec<RegistryEntry>,
}

/// A loaded model of either kind ([`Registry::load_any`]).
#[derive(Debug)]
pub enum LoadedModel {
    Classifier(Box<Model>),
    Segmenter(Box<Segmenter>),
}

/// Result of hashing one model's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub version: String,
    pub sha256: String,
}

impl Registry {
    /// Reads every immediate sub-folder of `root` that holds a `model-card.toml`. Folders
    /// without a card are ignored; an unreadable or invalid card is an error, as is an id
    /// declared twice. Weights are not read here.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        let read_dir = std::fs::read_dir(&root).map_err(|source| Error::ReadFile { path: root.clone(), source })?;
        let mut entries = Vec::new();
        for item in read_dir {
            let item = item.map_err(|source| Error::ReadFile { path: root.clone(), source })?;
            let dir = item.path();
            let card_path = dir.join(CARD_FILE);
            if !dir.is_dir() || !card_path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&card_path).map_err(|source| Error::ReadFile { path: card_path.clone(), source })?;
            let card = ModelCard::parse(&text).map_err(|reason| Error::ParseCard { path: card_path.clone(), reason })?;
            if entries.iter().any(|e: &RegistryEntry| e.card.id == card.id) {
                return Err(Error::DuplicateModel { id: card.id });
            }
            entries.push(RegistryEntry { dir, card });
        }
        entries.sort_by(|a, b| a.card.id.cmp(&b.card.id));
        Ok(Self { root, entries })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All models, sorted by id.
    pub fn models(&self) -> &[RegistryEntry] {
        &self.entries
    }

    pub fn get(&self, id: &str) -> Result<&RegistryEntry, Error> {
        self.entries.iter().find(|e| e.card.id == id).ok_or_else(|| Error::ModelNotFound { id: id.into() })
    }

    /// Reads the weights and checks them against the card (and `weights.sha256` if present).
    fn read_verified(&self, entry: &RegistryEntry) -> Result<(Vec<u8>, Verified), Error> {
        let path = entry.weights_path();
        let bytes = std::fs::read(&path).map_err(|source| Error::ReadFile { path: path.clone(), source })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        let expected = entry.card.weights.sha256.to_ascii_lowercase();
        let mismatch = |expected: String| Error::WeightsHashMismatch { model: entry.card.id.clone(), expected, actual: actual.clone() };
        if actual != expected {
            return Err(mismatch(expected));
        }
        let sha_file = entry.dir.join("weights.sha256");
        if sha_file.is_file() {
            let text = std::fs::read_to_string(&sha_file).map_err(|source| Error::ReadFile { path: sha_file.clone(), source })?;
            let listed = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            if listed != actual {
                return Err(mismatch(listed));
            }
        }
        Ok((bytes, Verified { id: entry.card.id.clone(), version: entry.card.version.clone(), sha256: actual }))
    }

    /// Hash-checks one model's weights without building it.
    pub fn verify(&self, id: &str) -> Result<Verified, Error> {
        Ok(self.read_verified(self.get(id)?)?.1)
    }

    /// Hash-checks every model; one result per model, in id order.
    pub fn verify_all(&self) -> Vec<(String, Result<Verified, Error>)> {
        self.entries.iter().map(|e| (e.card.id.clone(), self.read_verified(e).map(|(_, v)| v))).collect()
    }

    /// Loads a model on the CPU after checking its weights' hash.
    pub fn load(&self, id: &str) -> Result<Model, Error> {
        self.load_on(id, &Device::Cpu)
    }

    /// Loads a model on `device` after checking its weights' hash.
    pub fn load_on(&self, id: &str, device: &Device) -> Result<Model, Error> {
        let entry = self.get(id)?;
        let (bytes, _) = self.read_verified(entry)?;
        Model::from_safetensors(entry.card.clone(), bytes, device)
    }

    /// Loads a segmentation model (`basic-unet`) on the CPU after checking its weights' hash.
    pub fn load_segmenter(&self, id: &str) -> Result<Segmenter, Error> {
        let entry = self.get(id)?;
        let (bytes, _) = self.read_verified(entry)?;
        Segmenter::from_safetensors(entry.card.clone(), bytes, &Device::Cpu)
    }

    /// Loads any model on the CPU after checking its weights' hash: a classifier or a
    /// segmenter, by its card's architecture.
    pub fn load_any(&self, id: &str) -> Result<LoadedModel, Error> {
        let entry = self.get(id)?;
        if entry.card.architecture.is_segmentation() {
            Ok(LoadedModel::Segmenter(Box::new(self.load_segmenter(id)?)))
        } else {
            Ok(LoadedModel::Classifier(Box::new(self.load(id)?)))
        }
    }

    /// Models whose `applies_to` matches the study (see [`crate::card::AppliesTo::matches`]),
    /// in id order.
    pub fn route(&self, modality: Option<&str>, body_part: Option<&str>, procedure_code: Option<&str>) -> Vec<&RegistryEntry> {
        self.entries.iter().filter(|e| e.card.applies_to.matches(modality, body_part, procedure_code)).collect()
    }
}
