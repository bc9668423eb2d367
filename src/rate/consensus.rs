//! Consensus of several raters per image, and the task labels derived from it.
//!
//! Input: the latest rating of each (image, rater) pair and the set of adjudicators.
//!
//! Rules, field by field (each field is decided on its own):
//! 1. `usable`: majority of usable versus reject over all raters of the image.
//! 2. `reject_reason`: decided only when the consensus is reject; majority among the
//!    raters who rejected.
//! 3. `gado`, `motion`, `contrast`, `noise`: decided only when the consensus is usable;
//!    majority among the raters who said usable. When the consensus is reject these
//!    fields are `None` (not applicable): a rejected image has no grades, and the
//!    grades that a minority of raters gave are not carried into the consensus.
//!    When `usable` itself is disputed, all later fields are `None` too.
//!    Quality-only ratings (`grades_known = false`, e.g. imported from MRIQC tables)
//!    vote on `usable`, `reject_reason` and `quality` but not on `gado` or the grades,
//!    whose values they only hold as placeholders.
//! 4. Ties: when several values share the highest vote count, the adjudicators among
//!    the voters of that field decide, by their own majority, provided the value they
//!    choose is one of the tied values. Otherwise (no adjudicator voted, adjudicators
//!    split, or they chose a value outside the tie) the field is
//!    [`Decision::Disputed`].
//!
//! Derived task labels:
//! - `usable` label: the `usable` decision; none when disputed.
//! - `quality` label (good/medium/bad, usable images only): the majority of the
//!   per-rater quality classes (worst grade of each rating) among the raters who said
//!   usable, with the same tie rule. It is not the worst of the per-field consensus
//!   grades, because per-field majorities can build a quality no rater gave (one rater
//!   sees moderate motion, another moderate noise, a third nothing: each field's
//!   majority is "none", yet two of three raters called the image medium). None when
//!   the image is not a consensus usable image or the quality vote is disputed.
//! - `gado` label: the `gado` decision on consensus usable images; none otherwise.

use crate::protocol::{Grade, Quality, Rating, RejectReason};
use std::collections::{BTreeMap, HashSet};

/// One rater's latest rating of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRating<I> {
    pub image: I,
    pub rater: String,
    pub rating: Rating,
    /// `false` for quality-only ratings, whose gado and grades are placeholders.
    pub grades_known: bool,
}

/// One rater's vote on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote<'a> {
    pub rating: &'a Rating,
    pub by_adjudicator: bool,
    pub grades_known: bool,
}

/// The outcome of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<T> {
    /// A strict majority of the voters (more votes than any other value).
    Majority(T),
    /// A tie broken by the adjudicators.
    Adjudicated(T),
    /// A tie that the adjudicators did not break.
    Disputed,
}

impl<T: Copy> Decision<T> {
    /// The decided value, if any.
    pub fn value(&self) -> Option<T> {
        match *self {
            Decision::Majority(value) | Decision::Adjudicated(value) => Some(value),
            Decision::Disputed => None,
        }
    }

    /// The word stored in a text column: `majority`, `adjudicated` or `disputed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Majority(_) => "majority",
            Decision::Adjudicated(_) => "adjudicated",
            Decision::Disputed => "disputed",
        }
    }
}

/// The consensus of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConsensus<I> {
    pub image: I,
    /// Number of raters whose latest rating entered the vote.
    pub n_raters: usize,
    /// `true` usable, `false` reject.
    pub usable: Decision<bool>,
    /// Set only when `usable` decided reject.
    pub reject_reason: Option<Decision<RejectReason>>,
    /// Set only when `usable` decided usable and at least one usable vote has known
    /// grades.
    pub gado: Option<Decision<bool>>,
    pub motion: Option<Decision<Grade>>,
    pub contrast: Option<Decision<Grade>>,
    pub noise: Option<Decision<Grade>>,
    /// Majority of the per-rater quality classes among usable votes; set only when
    /// `usable` decided usable.
    pub quality: Option<Decision<Quality>>,
}

impl<I> ImageConsensus<I> {
    /// Binary target: usable (true) or reject (false); none when disputed.
    pub fn usable_label(&self) -> Option<bool> {
        self.usable.value()
    }

    /// Three-class target on consensus usable images; none when disputed.
    pub fn quality_label(&self) -> Option<Quality> {
        self.quality.and_then(|decision| decision.value())
    }

    /// Gadolinium target on consensus usable images; none when disputed.
    pub fn gado_label(&self) -> Option<bool> {
        self.gado.and_then(|decision| decision.value())
    }
}

/// Majority vote with the adjudicator tie rule of the module documentation.
/// `votes` holds (value, cast by an adjudicator).
fn decide<T: Copy + Ord>(votes: &[(T, bool)]) -> Decision<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for &(value, _) in votes {
        *counts.entry(value).or_default() += 1;
    }
    let Some(&top) = counts.values().max() else {
        return Decision::Disputed;
    };
    let leaders: Vec<T> = counts
        .iter()
        .filter(|&(_, &count)| count == top)
        .map(|(&value, _)| value)
        .collect();
    if let [single] = leaders[..] {
        return Decision::Majority(single);
    }
    let adjudicator_votes: Vec<(T, bool)> = votes
        .iter()
        .filter(|&&(_, by_adjudicator)| by_adjudicator)
        .map(|&(value, _)| (value, false))
        .collect();
    if adjudicator_votes.is_empty() {
        return Decision::Disputed;
    }
    match decide(&adjudicator_votes) {
        Decision::Majority(value) if leaders.contains(&value) => Decision::Adjudicated(value),
        _ => Decision::Disputed,
    }
}

/// Consensus of one image from its raters' latest ratings, one vote per rater.
pub fn image_consensus<I: Clone>(image: &I, votes: &[Vote<'_>]) -> ImageConsensus<I> {
    let usable_votes: Vec<(bool, bool)> = votes
        .iter()
        .map(|vote| (vote.rating.is_usable(), vote.by_adjudicator))
        .collect();
    let usable = decide(&usable_votes);
    let mut consensus = ImageConsensus {
        image: image.clone(),
        n_raters: votes.len(),
        usable,
        reject_reason: None,
        gado: None,
        motion: None,
        contrast: None,
        noise: None,
        quality: None,
    };
    match usable.value() {
        Some(false) => {
            let reasons: Vec<(RejectReason, bool)> = votes
                .iter()
                .filter_map(|vote| {
                    let reason = vote.rating.usable.reject_reason()?;
                    Some((reason, vote.by_adjudicator))
                })
                .collect();
            consensus.reject_reason = Some(decide(&reasons));
        }
        Some(true) => {
            let usable_votes: Vec<&Vote<'_>> = votes
                .iter()
                .filter(|vote| vote.rating.is_usable())
                .collect();
            let detailed: Vec<(&Rating, bool)> = usable_votes
                .iter()
                .filter(|vote| vote.grades_known)
                .map(|vote| (vote.rating, vote.by_adjudicator))
                .collect();
            if !detailed.is_empty() {
                let field = |pick: fn(&Rating) -> Grade| {
                    let field_votes: Vec<(Grade, bool)> =
                        detailed.iter().map(|&(r, adj)| (pick(r), adj)).collect();
                    Some(decide(&field_votes))
                };
                consensus.motion = field(|r| r.motion);
                consensus.contrast = field(|r| r.contrast);
                consensus.noise = field(|r| r.noise);
                let gado: Vec<(bool, bool)> =
                    detailed.iter().map(|&(r, adj)| (r.gado, adj)).collect();
                consensus.gado = Some(decide(&gado));
            }
            let quality: Vec<(Quality, bool)> = usable_votes
                .iter()
                .filter_map(|vote| Some((vote.rating.quality()?, vote.by_adjudicator)))
                .collect();
            consensus.quality = Some(decide(&quality));
        }
        None => {}
    }
    consensus
}

/// Consensus of every image in `latest`, in image order. A rater with several
/// ratings of one image in `latest` counts once, with the last of them.
pub fn consensus<I: Clone + Ord>(
    latest: &[LatestRating<I>],
    adjudicators: &HashSet<String>,
) -> Vec<ImageConsensus<I>> {
    let mut by_image: BTreeMap<&I, BTreeMap<&str, &LatestRating<I>>> = BTreeMap::new();
    for entry in latest {
        by_image
            .entry(&entry.image)
            .or_default()
            .insert(entry.rater.as_str(), entry);
    }
    by_image
        .into_iter()
        .map(|(image, raters)| {
            let votes: Vec<Vote<'_>> = raters
                .into_iter()
                .map(|(rater, entry)| Vote {
                    rating: &entry.rating,
                    by_adjudicator: adjudicators.contains(rater),
                    grades_known: entry.grades_known,
                })
                .collect();
            image_consensus(image, &votes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, &str)]) -> Vec<LatestRating<String>> {
        rows.iter()
            .map(|&(image, rater, code)| LatestRating {
                image: image.to_string(),
                rater: rater.to_string(),
                rating: Rating::from_code(code).unwrap(),
                grades_known: true,
            })
            .collect()
    }

    fn reject(image: &str, rater: &str, reason: RejectReason) -> LatestRating<String> {
        LatestRating {
            image: image.into(),
            rater: rater.into(),
            rating: Rating::reject(reason),
            grades_known: true,
        }
    }

    fn adjudicators() -> HashSet<String> {
        HashSet::from(["chief".to_string()])
    }

    fn find<'a>(all: &'a [ImageConsensus<String>], image: &str) -> &'a ImageConsensus<String> {
        all.iter().find(|c| c.image == image).unwrap()
    }

    #[test]
    fn majorities_ties_adjudication_and_missing_raters() {
        let mut latest = table(&[
            // img1: clear majority usable; motion 2-1 moderate; quality medium.
            ("img1", "ann", "a"),
            ("img1", "bob", "a"),
            ("img1", "cat", ""),
            // img2: 1-1 usable tie, no adjudicator -> disputed.
            ("img2", "ann", "r"),
            ("img2", "bob", "k"),
            // img3: 1-1 tie broken by the adjudicator.
            ("img3", "ann", "r"),
            ("img3", "chief", "zz"),
            // img4: only one rater (others missing).
            ("img4", "cat", "kd"),
            // img5: usable 2-1; per-field majority says good, quality vote says medium.
            ("img5", "ann", "a"),
            ("img5", "bob", "d"),
            ("img5", "cat", "r"),
            // img6: usable, gado tie with adjudicator voting k.
            ("img6", "ann", ""),
            ("img6", "chief", "k"),
        ]);
        latest.extend([
            // img7: reject 4-0, reasons 2-2 tie, the adjudicator picks not_3d.
            reject("img7", "ann", RejectReason::Not3d),
            reject("img7", "bob", RejectReason::DerivedMap),
            reject("img7", "chief", RejectReason::Not3d),
            reject("img7", "cat", RejectReason::DerivedMap),
            // img8: reject 2-1 with reasons tied and no adjudicator.
            reject("img8", "ann", RejectReason::NotBrain),
            reject("img8", "bob", RejectReason::Corrupted),
        ]);
        latest.extend(table(&[("img8", "cat", "aa")]));
        let all = consensus(&latest, &adjudicators());
        assert_eq!(all.len(), 8);

        let img1 = find(&all, "img1");
        assert_eq!(img1.n_raters, 3);
        assert_eq!(img1.usable, Decision::Majority(true));
        assert_eq!(img1.motion, Some(Decision::Majority(Grade::Moderate)));
        assert_eq!(img1.gado, Some(Decision::Majority(false)));
        assert_eq!(img1.quality_label(), Some(Quality::Medium));
        assert_eq!(img1.reject_reason, None);

        let img2 = find(&all, "img2");
        assert_eq!(img2.usable, Decision::Disputed);
        assert_eq!(img2.usable_label(), None);
        assert_eq!(img2.quality, None);
        assert_eq!(img2.gado_label(), None);

        let img3 = find(&all, "img3");
        assert_eq!(img3.usable, Decision::Adjudicated(true));
        assert_eq!(img3.contrast, Some(Decision::Majority(Grade::Severe)));
        assert_eq!(img3.quality_label(), Some(Quality::Bad));

        let img4 = find(&all, "img4");
        assert_eq!(img4.n_raters, 1);
        assert_eq!(img4.gado_label(), Some(true));
        assert_eq!(img4.quality_label(), Some(Quality::Medium));

        let img5 = find(&all, "img5");
        assert_eq!(img5.motion, Some(Decision::Disputed));
        assert_eq!(img5.noise, Some(Decision::Disputed));
        assert_eq!(img5.quality, Some(Decision::Majority(Quality::Medium)));

        let img6 = find(&all, "img6");
        assert_eq!(img6.gado, Some(Decision::Adjudicated(true)));
        assert_eq!(img6.quality, Some(Decision::Majority(Quality::Good)));

        let img7 = find(&all, "img7");
        assert_eq!(img7.usable, Decision::Majority(false));
        assert_eq!(img7.usable_label(), Some(false));
        assert_eq!(
            img7.reject_reason,
            Some(Decision::Adjudicated(RejectReason::Not3d))
        );
        assert_eq!((img7.motion, img7.gado, img7.quality), (None, None, None));

        let img8 = find(&all, "img8");
        assert_eq!(img8.usable, Decision::Majority(false));
        assert_eq!(img8.reject_reason, Some(Decision::Disputed));
        assert_eq!(
            img8.quality_label(),
            None,
            "grades of the minority are dropped"
        );
    }

    #[test]
    fn adjudicator_outside_the_tie_does_not_decide() {
        let latest = table(&[
            ("img", "ann", ""),
            ("img", "bob", ""),
            ("img", "cat", "a"),
            ("img", "dan", "a"),
            ("img", "chief", "aa"),
        ]);
        let all = consensus(&latest, &adjudicators());
        assert_eq!(all[0].motion, Some(Decision::Disputed));
        assert_eq!(all[0].quality, Some(Decision::Disputed));
    }

    #[test]
    fn quality_only_votes_skip_grades() {
        let quality_only = |rater: &str, quality: Quality| LatestRating {
            image: "img".to_string(),
            rater: rater.to_string(),
            rating: crate::rate::formats::quality_only(quality),
            grades_known: false,
        };
        let mut latest = vec![
            quality_only("rater_1", Quality::Medium),
            quality_only("rater_2", Quality::Medium),
        ];
        let only_mriqc = consensus(&latest, &HashSet::new());
        assert_eq!(only_mriqc[0].quality_label(), Some(Quality::Medium));
        assert_eq!((only_mriqc[0].motion, only_mriqc[0].gado), (None, None));
        latest.extend(table(&[("img", "ann", "kd")]));
        let mixed = consensus(&latest, &HashSet::new());
        assert_eq!(mixed[0].motion, Some(Decision::Majority(Grade::None)));
        assert_eq!(mixed[0].noise, Some(Decision::Majority(Grade::Moderate)));
        assert_eq!(mixed[0].gado_label(), Some(true));
        assert_eq!(mixed[0].quality, Some(Decision::Majority(Quality::Medium)));
    }

    #[test]
    fn split_adjudicators_leave_the_tie_disputed() {
        let latest = table(&[("img", "chief", "r"), ("img", "head", "")]);
        let both = HashSet::from(["chief".to_string(), "head".to_string()]);
        assert_eq!(consensus(&latest, &both)[0].usable, Decision::Disputed);
    }

    #[test]
    fn repeated_rater_counts_once_with_last_rating() {
        let latest = table(&[("img", "ann", "r"), ("img", "ann", ""), ("img", "bob", "")]);
        let all = consensus(&latest, &HashSet::new());
        assert_eq!(all[0].n_raters, 2);
        assert_eq!(all[0].usable, Decision::Majority(true));
    }
}
