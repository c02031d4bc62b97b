//! The service definitions served by discovery (`cds-hooks/services.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Hook;

/// One CDS Service, exactly as discovery describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceDefinition {
    pub hook: String,
    pub id: String,
    pub title: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefetch: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_requirements: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    pub services: Vec<ServiceDefinition>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("could not read service definitions from {path}")]
    Read { path: String, source: std::io::Error },
    #[error("service definitions are not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("service {id}: hook {hook} is not one radsight implements")]
    UnsupportedHook { id: String, hook: String },
    #[error("service id {0} appears twice")]
    DuplicateId(String),
}

pub struct ServiceDefinitions {
    discovery: Discovery,
    /// The discovery document, serialised once: it is served on every discovery call.
    discovery_json: String,
}

impl ServiceDefinitions {
    /// Loads `path`, or the definitions built into the binary when `path` is empty.
    pub fn load(path: &str) -> Result<ServiceDefinitions, DefinitionsError> {
        let text = if path.is_empty() {
            include_str!("../../cds-hooks/services.json").to_owned()
        } else {
            std::fs::read_to_string(path).map_err(|source| DefinitionsError::Read { path: path.into(), source })?
        };
        let discovery: Discovery = serde_json::from_str(&text)?;
        let mut ids = std::collections::HashSet::new();
        for s in &discovery.services {
            if Hook::parse(&s.hook).is_none() {
                return Err(DefinitionsError::UnsupportedHook { id: s.id.clone(), hook: s.hook.clone() });
            }
            if !ids.insert(s.id.clone()) {
                return Err(DefinitionsError::DuplicateId(s.id.clone()));
            }
        }
        let discovery_json = serde_json::to_string(&discovery)?;
        Ok(ServiceDefinitions { discovery, discovery_json })
    }

    pub fn get(&self, id: &str) -> Option<&ServiceDefinition> {
        self.discovery.services.iter().find(|s| s.id == id)
    }

    pub fn discovery_json(&self) -> &str {
        &self.discovery_json
    }
}
