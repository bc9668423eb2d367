//! Training recipes: the rules of the merged ClinicaDL SSDA code (`clinicadl`) and the
//! project's own (`cdwqc`), each rule overridable from a preset's `[training]` section.
//!
//! docs/training.md lists every difference between the two and why it exists.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::network::{PoolPadding, WeightInit};

/// A named set of training rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// The merged ClinicaDL SSDA code (commit 759baf27) with its default configuration.
    Clinicadl,
    /// The project's own rules.
    #[default]
    Cdwqc,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Clinicadl => "clinicadl",
            Recipe::Cdwqc => "cdwqc",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        match text {
            "clinicadl" => Ok(Recipe::Clinicadl),
            "cdwqc" => Ok(Recipe::Cdwqc),
            _ => Err(ModelError::Config(format!(
                "recipe {text:?}: expected clinicadl or cdwqc"
            ))),
        }
    }
}

/// When the gradient reversal factor `alpha = 2 / (1 + exp(-10 p)) - 1` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaSchedule {
    /// `p = epoch / 10` (0-based), one value for the whole epoch, not clamped.
    PerEpoch,
    /// `p` = fraction of the phase's iterations done, updated every iteration.
    PerIteration,
}

/// How the three training streams make up an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchComposition {
    /// Source: shuffled full batches of B (the last incomplete one dropped); labelled
    /// target: one image per iteration, its index list repeated to N_source // B entries
    /// (`indices * (L // n) + indices[..L % n]`) and shuffled; unlabelled target: shuffled
    /// full batches of B, once per epoch. The streams are zipped, so an epoch lasts as
    /// long as the shortest. Single-stream methods use plain shuffled batches, the last
    /// one kept whatever its size.
    Clinicadl,
    /// Source: shuffled batches of B (a last batch of one image dropped); labelled and
    /// unlabelled target: B images per iteration, drawn by cycling through reshuffled
    /// passes so that every source batch has a partner.
    Cdwqc,
}

/// How many outputs the domain classifier has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainOutputs {
    /// As many as the task's classes (the merged code builds all heads alike); the
    /// domain labels 0 and 1 use the first two.
    Classes,
    /// Two: source and target.
    Two,
}

/// The resolved rules a run trains with; stored in its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecipeSettings {
    pub recipe: Recipe,
    pub alpha_schedule: AlphaSchedule,
    pub batch_composition: BatchComposition,
    /// Inverse class frequency weights in the training and validation losses.
    pub class_weights: bool,
    /// Dropout before the first fully connected layer of every head.
    pub dropout: f64,
    pub pool_padding: PoolPadding,
    pub weight_init: WeightInit,
    pub domain_outputs: DomainOutputs,
}

impl RecipeSettings {
    pub fn of(recipe: Recipe) -> Self {
        match recipe {
            Recipe::Clinicadl => Self {
                recipe,
                alpha_schedule: AlphaSchedule::PerEpoch,
                batch_composition: BatchComposition::Clinicadl,
                class_weights: false,
                dropout: 0.0,
                pool_padding: PoolPadding::Front,
                weight_init: WeightInit::Pytorch,
                domain_outputs: DomainOutputs::Classes,
            },
            Recipe::Cdwqc => Self {
                recipe,
                alpha_schedule: AlphaSchedule::PerIteration,
                batch_composition: BatchComposition::Cdwqc,
                class_weights: true,
                dropout: 0.5,
                pool_padding: PoolPadding::End,
                weight_init: WeightInit::KaimingRelu,
                domain_outputs: DomainOutputs::Two,
            },
        }
    }

    /// Epochs without a lower validation loss before training stops; 0 = never stops.
    pub fn default_patience(recipe: Recipe) -> usize {
        match recipe {
            Recipe::Clinicadl => 0,
            Recipe::Cdwqc => 5,
        }
    }
}

/// Runs stored before recipes existed trained with the `cdwqc` rules.
impl Default for RecipeSettings {
    fn default() -> Self {
        Self::of(Recipe::Cdwqc)
    }
}

/// A preset's `[training]` section: a recipe and optional overrides of its rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSection {
    pub recipe: Option<Recipe>,
    pub alpha_schedule: Option<AlphaSchedule>,
    pub batch_composition: Option<BatchComposition>,
    pub class_weights: Option<bool>,
    pub dropout: Option<f64>,
    pub patience: Option<usize>,
    pub pool_padding: Option<PoolPadding>,
    pub weight_init: Option<WeightInit>,
    pub domain_outputs: Option<DomainOutputs>,
}

impl TrainingSection {
    /// The section's rules with `recipe` (a command-line choice) in place of the
    /// section's recipe; the section's explicit overrides apply on top of either.
    pub fn resolve(&self, recipe: Option<Recipe>) -> (RecipeSettings, usize) {
        let recipe = recipe.or(self.recipe).unwrap_or_default();
        let base = RecipeSettings::of(recipe);
        let settings = RecipeSettings {
            recipe,
            alpha_schedule: self.alpha_schedule.unwrap_or(base.alpha_schedule),
            batch_composition: self.batch_composition.unwrap_or(base.batch_composition),
            class_weights: self.class_weights.unwrap_or(base.class_weights),
            dropout: self.dropout.unwrap_or(base.dropout),
            pool_padding: self.pool_padding.unwrap_or(base.pool_padding),
            weight_init: self.weight_init.unwrap_or(base.weight_init),
            domain_outputs: self.domain_outputs.unwrap_or(base.domain_outputs),
        };
        let patience = self
            .patience
            .unwrap_or_else(|| RecipeSettings::default_patience(recipe));
        (settings, patience)
    }

    pub fn validate(&self, origin: &str) -> Result<(), ModelError> {
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(ModelError::Config(format!(
                "preset {origin}: [training] dropout {p} outside [0, 1)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_on_top_of_the_chosen_recipe() {
        let section: TrainingSection = toml::from_str("recipe = 'cdwqc'\ndropout = 0.25").unwrap();
        let (settings, patience) = section.resolve(None);
        assert_eq!(settings.recipe, Recipe::Cdwqc);
        assert_eq!(settings.dropout, 0.25);
        assert!(settings.class_weights);
        assert_eq!(patience, 5);
        let (settings, patience) = section.resolve(Some(Recipe::Clinicadl));
        assert_eq!(settings.recipe, Recipe::Clinicadl);
        assert_eq!(settings.dropout, 0.25);
        assert!(!settings.class_weights);
        assert_eq!(settings.alpha_schedule, AlphaSchedule::PerEpoch);
        assert_eq!(patience, 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!("clinica".parse::<Recipe>().is_err());
        assert!(toml::from_str::<TrainingSection>("recipe = 'x'").is_err());
        assert!(toml::from_str::<TrainingSection>("dropuot = 0.1").is_err());
        let section = TrainingSection {
            dropout: Some(1.0),
            ..Default::default()
        };
        assert!(section.validate("inline").is_err());
    }

    #[test]
    fn configurations_stored_without_a_recipe_read_as_cdwqc() {
        #[derive(Deserialize)]
        struct Stored {
            #[serde(default)]
            recipe: RecipeSettings,
        }
        let stored: Stored = serde_json::from_str("{}").unwrap();
        assert_eq!(stored.recipe, RecipeSettings::of(Recipe::Cdwqc));
    }
}
