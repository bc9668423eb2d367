//! The QC protocol: rating types, notebook codes, derived tiers and quality classes.
//!
//! A rating says whether an image is usable (a proper 3D brain MRI of the expected
//! sequence) and, for usable images, whether gadolinium was injected and how severe
//! motion, contrast loss and noise are.
//!
//! # Notebook codes
//!
//! The authors' rating notebook stores a rating as a short code: `r` reject, `k`
//! gadolinium, `a`/`aa` moderate/severe motion, `z`/`zz` medium/bad contrast, `d`/`dd`
//! moderate/severe noise. Keys may come in any order (`kaz`, `zza`); the empty code is a
//! good usable image. Keys are lowercase; surrounding whitespace is ignored.
//!
//! Rules this crate enforces:
//! - `r` stands alone. In the notebook a rejected image is just rejected, and the tier
//!   of any code containing `r` is 4 whatever else it holds, so `ra` or `rk` would carry
//!   information that the tier ignores and that could never be exported back. Such codes
//!   are refused, and a reject [`Rating`] always has `gado = false` and all grades
//!   [`Grade::None`] (see [`Rating::check`]).
//! - A plain `r` maps to [`RejectReason::Other`]: the notebook cannot express a reason.
//!   Printing a reject rating gives `r` whatever its reason, so the reason is the one
//!   piece of a rating that a notebook code does not carry.
//! - Printing gives the canonical code, keys in the fixed order `r k a z d`
//!   (e.g. `kaazd`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Severity of one artefact: 0 none, 1 moderate, 2 severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum Grade {
    #[default]
    None,
    Moderate,
    Severe,
}

impl Grade {
    /// All grades, mildest first.
    pub const ALL: [Grade; 3] = [Grade::None, Grade::Moderate, Grade::Severe];

    /// The grade's number: 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            Grade::None => 0,
            Grade::Moderate => 1,
            Grade::Severe => 2,
        }
    }

    /// The grade with the given number, if it is 0, 1 or 2.
    pub fn from_level(level: u8) -> Option<Grade> {
        Grade::ALL.get(usize::from(level)).copied()
    }

    /// The word used in TSV/JSON columns: `none`, `moderate`, `severe`.
    pub fn name(self) -> &'static str {
        match self {
            Grade::None => "none",
            Grade::Moderate => "moderate",
            Grade::Severe => "severe",
        }
    }
}

impl From<Grade> for u8 {
    fn from(grade: Grade) -> u8 {
        grade.level()
    }
}

impl TryFrom<u8> for Grade {
    type Error = ProtocolError;
    fn try_from(level: u8) -> Result<Grade, ProtocolError> {
        Grade::from_level(level).ok_or_else(|| ProtocolError::InvalidGrade(level.to_string()))
    }
}

impl fmt::Display for Grade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level())
    }
}

impl FromStr for Grade {
    type Err = ProtocolError;
    /// Accepts `0`/`1`/`2` or `none`/`moderate`/`severe`.
    fn from_str(text: &str) -> Result<Grade, ProtocolError> {
        match text.trim() {
            "0" | "none" => Ok(Grade::None),
            "1" | "moderate" => Ok(Grade::Moderate),
            "2" | "severe" => Ok(Grade::Severe),
            _ => Err(ProtocolError::InvalidGrade(text.to_string())),
        }
    }
}

/// Why an image is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a brain image.
    NotBrain,
    /// A brain image of another sequence than expected.
    WrongSequence,
    /// A 2D or thick-slice acquisition.
    #[serde(rename = "not_3d")]
    Not3d,
    /// A segmentation, probability or statistic map.
    DerivedMap,
    /// The field of view cuts the brain.
    TruncatedFov,
    /// Unreadable or broken data.
    Corrupted,
    /// Any other reason, and the reason of a notebook `r`.
    Other,
}

impl RejectReason {
    /// All reasons in their documented order.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::NotBrain,
        RejectReason::WrongSequence,
        RejectReason::Not3d,
        RejectReason::DerivedMap,
        RejectReason::TruncatedFov,
        RejectReason::Corrupted,
        RejectReason::Other,
    ];

    /// The snake_case name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::NotBrain => "not_brain",
            RejectReason::WrongSequence => "wrong_sequence",
            RejectReason::Not3d => "not_3d",
            RejectReason::DerivedMap => "derived_map",
            RejectReason::TruncatedFov => "truncated_fov",
            RejectReason::Corrupted => "corrupted",
            RejectReason::Other => "other",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RejectReason {
    type Err = ProtocolError;
    fn from_str(text: &str) -> Result<RejectReason, ProtocolError> {
        let wanted = text.trim();
        RejectReason::ALL
            .into_iter()
            .find(|reason| reason.name() == wanted)
            .ok_or_else(|| ProtocolError::InvalidRejectReason(text.to_string()))
    }
}

/// The usable/reject decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usability {
    Usable,
    Reject(RejectReason),
}

impl Usability {
    pub fn is_usable(self) -> bool {
        matches!(self, Usability::Usable)
    }

    pub fn reject_reason(self) -> Option<RejectReason> {
        match self {
            Usability::Usable => None,
            Usability::Reject(reason) => Some(reason),
        }
    }
}

/// Derived tier of the authors' notebook: 1 good, 2 medium, 3 bad, 4 reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Good = 1,
    Medium = 2,
    Bad = 3,
    Reject = 4,
}

impl Tier {
    /// The tier number the notebook writes in its `label` column.
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(number: u8) -> Option<Tier> {
        match number {
            1 => Some(Tier::Good),
            2 => Some(Tier::Medium),
            3 => Some(Tier::Bad),
            4 => Some(Tier::Reject),
            _ => None,
        }
    }

    /// The quality class of a usable tier, `None` for [`Tier::Reject`].
    pub fn quality(self) -> Option<Quality> {
        match self {
            Tier::Good => Some(Quality::Good),
            Tier::Medium => Some(Quality::Medium),
            Tier::Bad => Some(Quality::Bad),
            Tier::Reject => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Overall quality of a usable image: the worst of its three grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    Medium,
    Bad,
}

impl Quality {
    pub const ALL: [Quality; 3] = [Quality::Good, Quality::Medium, Quality::Bad];

    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Medium => "medium",
            Quality::Bad => "bad",
        }
    }

    /// The grade whose severity gives this quality (good 0, medium 1, bad 2).
    pub fn grade(self) -> Grade {
        match self {
            Quality::Good => Grade::None,
            Quality::Medium => Grade::Moderate,
            Quality::Bad => Grade::Severe,
        }
    }

    /// Class index for ordinal targets: good 0, medium 1, bad 2.
    pub fn index(self) -> usize {
        usize::from(self.grade().level())
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Quality {
    type Err = ProtocolError;
    fn from_str(text: &str) -> Result<Quality, ProtocolError> {
        let wanted = text.trim();
        Quality::ALL
            .into_iter()
            .find(|quality| quality.name() == wanted)
            .ok_or_else(|| ProtocolError::InvalidQuality(text.to_string()))
    }
}

/// Problems with protocol values; every message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid code '{code}': {reason}")]
    InvalidCode { code: String, reason: String },
    #[error("invalid grade '{0}': expected 0, 1, 2, none, moderate or severe")]
    InvalidGrade(String),
    #[error(
        "invalid reject reason '{0}': expected one of not_brain, wrong_sequence, not_3d, derived_map, truncated_fov, corrupted, other"
    )]
    InvalidRejectReason(String),
    #[error("invalid quality '{0}': expected good, medium or bad")]
    InvalidQuality(String),
    #[error("inconsistent rating: {0}")]
    Inconsistent(String),
}

/// One rater's judgement of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "RatingRecord", try_from = "RatingRecord")]
pub struct Rating {
    pub usable: Usability,
    pub gado: bool,
    pub motion: Grade,
    pub contrast: Grade,
    pub noise: Grade,
}

/// The valid keys of a notebook code, in canonical order.
pub const CODE_KEYS: &str = "r, k, a, z, d";

impl Rating {
    /// A usable image with no gadolinium and no artefact (the empty code).
    pub const GOOD: Rating = Rating {
        usable: Usability::Usable,
        gado: false,
        motion: Grade::None,
        contrast: Grade::None,
        noise: Grade::None,
    };

    /// A rejected image: gado false and all grades none, as the protocol requires.
    pub fn reject(reason: RejectReason) -> Rating {
        Rating {
            usable: Usability::Reject(reason),
            ..Rating::GOOD
        }
    }

    /// A usable image with the given gado flag and grades.
    pub fn usable(gado: bool, motion: Grade, contrast: Grade, noise: Grade) -> Rating {
        Rating {
            usable: Usability::Usable,
            gado,
            motion,
            contrast,
            noise,
        }
    }

    /// Refuses a reject rating that carries gado or a grade: a rejected image is just
    /// rejected.
    pub fn check(&self) -> Result<(), ProtocolError> {
        if let Usability::Reject(_) = self.usable {
            if self.gado {
                return Err(ProtocolError::Inconsistent(
                    "a rejected image carries no gado flag".into(),
                ));
            }
            if self.worst_grade() != Grade::None {
                return Err(ProtocolError::Inconsistent(
                    "a rejected image carries no motion, contrast or noise grade".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn is_usable(&self) -> bool {
        self.usable.is_usable()
    }

    fn worst_grade(&self) -> Grade {
        self.motion.max(self.contrast).max(self.noise)
    }

    /// The notebook tier: 4 for a reject, else 1 + the worst grade (k does not count).
    pub fn tier(&self) -> Tier {
        match self.usable {
            Usability::Reject(_) => Tier::Reject,
            Usability::Usable => match self.worst_grade() {
                Grade::None => Tier::Good,
                Grade::Moderate => Tier::Medium,
                Grade::Severe => Tier::Bad,
            },
        }
    }

    /// Good/medium/bad for usable images, `None` for rejects.
    pub fn quality(&self) -> Option<Quality> {
        self.tier().quality()
    }

    /// The canonical notebook code (keys in the order r k a z d). A reject prints as `r`
    /// whatever its reason.
    pub fn code(&self) -> String {
        if !self.is_usable() {
            return "r".to_string();
        }
        let mut code = String::new();
        if self.gado {
            code.push('k');
        }
        for (key, grade) in [('a', self.motion), ('z', self.contrast), ('d', self.noise)] {
            for _ in 0..grade.level() {
                code.push(key);
            }
        }
        code
    }

    /// Parses a notebook code; see the module documentation for the rules.
    pub fn from_code(code: &str) -> Result<Rating, ProtocolError> {
        let invalid = |reason: String| ProtocolError::InvalidCode {
            code: code.to_string(),
            reason,
        };
        let mut counts = [0usize; 5];
        for key in code.trim().chars() {
            let slot = match key {
                'r' => 0,
                'k' => 1,
                'a' => 2,
                'z' => 3,
                'd' => 4,
                other => {
                    return Err(invalid(format!(
                        "unknown key '{other}', valid keys are {CODE_KEYS}"
                    )));
                }
            };
            counts[slot] += 1;
        }
        let [rejects, gados, motion, contrast, noise] = counts;
        if rejects > 1 {
            return Err(invalid(format!("reject 'r' given {rejects} times")));
        }
        if gados > 1 {
            return Err(invalid(format!("gadolinium 'k' given {gados} times")));
        }
        let grade = |count: usize, key: char, artefact: &str| {
            u8::try_from(count)
                .ok()
                .and_then(Grade::from_level)
                .ok_or_else(|| {
                    invalid(format!(
                        "{artefact} has at most two levels ('{key}', '{key}{key}'), found {count} '{key}'"
                    ))
                })
        };
        let motion = grade(motion, 'a', "motion")?;
        let contrast = grade(contrast, 'z', "contrast")?;
        let noise = grade(noise, 'd', "noise")?;
        if rejects == 1 {
            if let Some(extra) = code.trim().chars().find(|&key| key != 'r') {
                return Err(invalid(format!(
                    "reject 'r' stands alone: a rejected image takes no other key (found '{extra}')"
                )));
            }
            return Ok(Rating::reject(RejectReason::Other));
        }
        Ok(Rating::usable(gados == 1, motion, contrast, noise))
    }
}

impl fmt::Display for Rating {
    /// Displays the canonical notebook code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

impl FromStr for Rating {
    type Err = ProtocolError;
    fn from_str(code: &str) -> Result<Rating, ProtocolError> {
        Rating::from_code(code)
    }
}

/// The flat, serde-friendly form of a [`Rating`] used for TSV and JSON columns.
///
/// `code`, `tier` and `quality` are derived; on reading they are optional and, when
/// present, must agree with the other fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingRecord {
    pub usable: bool,
    #[serde(default)]
    pub reject_reason: Option<RejectReason>,
    #[serde(default)]
    pub gado: bool,
    #[serde(default)]
    pub motion: Grade,
    #[serde(default)]
    pub contrast: Grade,
    #[serde(default)]
    pub noise: Grade,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub tier: Option<u8>,
    #[serde(default)]
    pub quality: Option<Quality>,
}

impl From<Rating> for RatingRecord {
    fn from(rating: Rating) -> RatingRecord {
        RatingRecord {
            usable: rating.is_usable(),
            reject_reason: rating.usable.reject_reason(),
            gado: rating.gado,
            motion: rating.motion,
            contrast: rating.contrast,
            noise: rating.noise,
            code: Some(rating.code()),
            tier: Some(rating.tier().number()),
            quality: rating.quality(),
        }
    }
}

impl TryFrom<RatingRecord> for Rating {
    type Error = ProtocolError;
    fn try_from(record: RatingRecord) -> Result<Rating, ProtocolError> {
        let usable = match (record.usable, record.reject_reason) {
            (true, None) => Usability::Usable,
            (true, Some(reason)) => {
                return Err(ProtocolError::Inconsistent(format!(
                    "usable image with reject reason '{reason}'"
                )));
            }
            (false, reason) => Usability::Reject(reason.unwrap_or(RejectReason::Other)),
        };
        let rating = Rating {
            usable,
            gado: record.gado,
            motion: record.motion,
            contrast: record.contrast,
            noise: record.noise,
        };
        rating.check()?;
        if let Some(code) = record.code {
            let from_code = Rating::from_code(&code)?;
            if from_code.code() != rating.code() {
                return Err(ProtocolError::Inconsistent(format!(
                    "code '{code}' does not match the fields (code '{}')",
                    rating.code()
                )));
            }
        }
        if let Some(tier) = record.tier
            && tier != rating.tier().number()
        {
            return Err(ProtocolError::Inconsistent(format!(
                "tier {tier} does not match the fields (tier {})",
                rating.tier()
            )));
        }
        if record.quality.is_some() && record.quality != rating.quality() {
            return Err(ProtocolError::Inconsistent(
                "quality does not match the fields".into(),
            ));
        }
        Ok(rating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grade_strategy() -> impl Strategy<Value = Grade> {
        prop::sample::select(Grade::ALL.to_vec())
    }

    /// Every rating a notebook code can express: usable ones, and rejects with reason
    /// `other` (the reason a plain `r` maps to).
    fn code_expressible_rating() -> impl Strategy<Value = Rating> {
        prop_oneof![
            (
                any::<bool>(),
                grade_strategy(),
                grade_strategy(),
                grade_strategy()
            )
                .prop_map(|(gado, m, c, n)| Rating::usable(gado, m, c, n)),
            Just(Rating::reject(RejectReason::Other)),
        ]
    }

    fn any_valid_rating() -> impl Strategy<Value = Rating> {
        prop_oneof![
            code_expressible_rating(),
            prop::sample::select(RejectReason::ALL.to_vec()).prop_map(Rating::reject),
        ]
    }

    proptest! {
        #[test]
        fn rating_code_rating_round_trips(rating in code_expressible_rating()) {
            prop_assert_eq!(Rating::from_code(&rating.code()), Ok(rating));
        }

        #[test]
        fn canonical_code_round_trips(rating in code_expressible_rating()) {
            let code = rating.code();
            prop_assert_eq!(Rating::from_code(&code).map(|r| r.code()), Ok(code));
        }

        #[test]
        fn any_permutation_parses_to_same_rating(
            rating in code_expressible_rating(),
            shuffle_keys in prop::collection::vec(any::<u32>(), 8),
        ) {
            let mut keys: Vec<(u32, char)> =
                rating.code().chars().zip(shuffle_keys).map(|(c, k)| (k, c)).collect();
            keys.sort();
            let permuted: String = keys.into_iter().map(|(_, c)| c).collect();
            prop_assert_eq!(Rating::from_code(&permuted), Ok(rating));
        }

        #[test]
        fn rejects_drop_only_their_reason_in_codes(rating in any_valid_rating()) {
            let back = Rating::from_code(&rating.code()).unwrap();
            prop_assert_eq!(back.tier(), rating.tier());
            prop_assert_eq!(back.is_usable(), rating.is_usable());
        }

        #[test]
        fn record_round_trips_every_valid_rating(rating in any_valid_rating()) {
            let json = serde_json::to_string(&rating).unwrap();
            prop_assert_eq!(serde_json::from_str::<Rating>(&json).unwrap(), rating);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,12}") {
            let _ = Rating::from_code(&text);
        }
    }

    fn reason_of(code: &str) -> String {
        match Rating::from_code(code) {
            Err(ProtocolError::InvalidCode { reason, .. }) => reason,
            other => panic!("expected an invalid code for '{code}', got {other:?}"),
        }
    }

    #[test]
    fn invalid_codes_say_why() {
        assert_eq!(reason_of("rr"), "reject 'r' given 2 times");
        assert_eq!(reason_of("kk"), "gadolinium 'k' given 2 times");
        assert_eq!(
            reason_of("aaa"),
            "motion has at most two levels ('a', 'aa'), found 3 'a'"
        );
        assert_eq!(
            reason_of("zzzd"),
            "contrast has at most two levels ('z', 'zz'), found 3 'z'"
        );
        assert_eq!(
            reason_of("x"),
            "unknown key 'x', valid keys are r, k, a, z, d"
        );
        assert_eq!(
            reason_of("A"),
            "unknown key 'A', valid keys are r, k, a, z, d"
        );
        assert!(reason_of("ra").contains("stands alone"));
        assert!(reason_of("kr").contains("found 'k'"));
    }

    #[test]
    fn examples_from_the_protocol() {
        let aaz = Rating::from_code("aaz").unwrap();
        assert_eq!(
            (aaz.motion, aaz.contrast, aaz.noise),
            (Grade::Severe, Grade::Moderate, Grade::None)
        );
        assert_eq!(aaz.tier(), Tier::Bad);
        assert_eq!(Rating::from_code("zza").unwrap().code(), "azz");
        assert_eq!(Rating::from_code("dazk").unwrap().code(), "kazd");
        assert_eq!(Rating::from_code("").unwrap(), Rating::GOOD);
        assert_eq!(Rating::from_code(" k ").unwrap().tier(), Tier::Good);
        assert_eq!(
            Rating::from_code("r").unwrap(),
            Rating::reject(RejectReason::Other)
        );
        assert_eq!(Rating::from_code("r").unwrap().quality(), None);
        assert_eq!(
            Rating::from_code("dd").unwrap().quality(),
            Some(Quality::Bad)
        );
        assert_eq!(
            Rating::from_code("kd").unwrap().quality(),
            Some(Quality::Medium)
        );
    }

    #[test]
    fn reject_reasons_parse_and_print() {
        for reason in RejectReason::ALL {
            assert_eq!(reason.to_string().parse::<RejectReason>(), Ok(reason));
        }
        assert_eq!("not_3d".parse::<RejectReason>(), Ok(RejectReason::Not3d));
        assert!("Not3D".parse::<RejectReason>().is_err());
    }

    #[test]
    fn record_uses_documented_column_names() {
        let rating = Rating::usable(true, Grade::Moderate, Grade::None, Grade::Severe);
        let json = serde_json::to_value(rating).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "usable": true, "reject_reason": null, "gado": true, "motion": 1,
                "contrast": 0, "noise": 2, "code": "kadd", "tier": 3, "quality": "bad"
            })
        );
        let reject = serde_json::to_value(Rating::reject(RejectReason::Not3d)).unwrap();
        assert_eq!(reject["reject_reason"], "not_3d");
        assert_eq!(reject["quality"], serde_json::Value::Null);
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let bad = r#"{"usable": false, "reject_reason": "not_brain", "motion": 1}"#;
        assert!(serde_json::from_str::<Rating>(bad).is_err());
        let wrong_code = r#"{"usable": true, "motion": 1, "code": "z"}"#;
        assert!(serde_json::from_str::<Rating>(wrong_code).is_err());
        let wrong_tier = r#"{"usable": true, "noise": 2, "tier": 2}"#;
        assert!(serde_json::from_str::<Rating>(wrong_tier).is_err());
    }
}
