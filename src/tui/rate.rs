//! The Rate view apart from drawing: the images to rate, the code being typed and its
//! parsing into a rating, saves and undos as the store answers them (reported to the
//! app as a [`RateOutcome`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::ratings::NewRating;

/// A valid rating code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParsedCode {
    pub reject: bool,
    pub gado: bool,
    pub motion: u8,
    pub contrast: u8,
    pub noise: u8,
}

impl ParsedCode {
    /// The plain rating fields this code stands for.
    pub fn apply_to(&self, rating: &mut NewRating) {
        rating.usable = !self.reject;
        // As `cdwqc rate` and rating files store a bare `r`.
        rating.reject_reason = self
            .reject
            .then(|| crate::protocol::RejectReason::Other.name().to_string());
        rating.gado = self.gado;
        rating.motion = self.motion;
        rating.contrast = self.contrast;
        rating.noise = self.noise;
    }
}

/// Parses a notebook code: `r` reject, `k` gadolinium, `a`/`aa` motion, `z`/`zz`
/// contrast, `d`/`dd` noise, in any order. An empty code is a usable image of good
/// quality. A rejected image gets no grades, so `r` stands alone.
pub fn parse_code(code: &str) -> Result<ParsedCode, String> {
    let mut counts = [0u8; 5];
    for c in code.chars() {
        let slot = match c {
            'r' => 0,
            'k' => 1,
            'a' => 2,
            'z' => 3,
            'd' => 4,
            other => return Err(format!("'{other}' is not a rating key (r k a z d)")),
        };
        counts[slot] = counts[slot].saturating_add(1);
    }
    let [reject, gado, motion, contrast, noise] = counts;
    if reject > 1 {
        return Err("'r' may be typed once".into());
    }
    if gado > 1 {
        return Err("'k' may be typed once".into());
    }
    for (count, key, what) in [
        (motion, 'a', "motion"),
        (contrast, 'z', "contrast"),
        (noise, 'd', "noise"),
    ] {
        if count > 2 {
            return Err(format!(
                "'{key}' at most twice ({what}: {key} moderate, {key}{key} severe)"
            ));
        }
    }
    if reject == 1 && code.len() > 1 {
        return Err("a rejected image gets no other key: 'r' stands alone".into());
    }
    Ok(ParsedCode {
        reject: reject == 1,
        gado: gado == 1,
        motion,
        contrast,
        noise,
    })
}

/// Words for a code, shown next to the pending code.
pub fn describe(code: &ParsedCode) -> String {
    if code.reject {
        return "reject".into();
    }
    let grade = |g: u8| match g {
        0 => "none",
        1 => "moderate",
        _ => "severe",
    };
    let tier = match code.motion.max(code.contrast).max(code.noise) {
        0 => "good",
        1 => "medium",
        _ => "bad",
    };
    format!(
        "{tier}: motion {}, contrast {}, noise {}{}",
        grade(code.motion),
        grade(code.contrast),
        grade(code.noise),
        if code.gado { ", gadolinium" } else { "" }
    )
}

/// What the Rate view asks of the app: a status line, a rating to save, and the image
/// whose ratings changed (the other views then reload it).
#[derive(Debug, Default, PartialEq)]
pub struct RateOutcome {
    pub message: Option<String>,
    pub save: Option<NewRating>,
    pub rated_image: Option<i64>,
    /// The session's save to withdraw (`u`).
    pub undo: Option<i64>,
}

impl RateOutcome {
    fn say(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// Why a session without a rater cannot rate.
const NO_RATER: &str = "rating needs --rater NAME";

/// How long an image is on screen before a save of it is taken: a second Enter
/// bouncing or repeated after a save would otherwise rate the next image, unseen, as
/// good.
pub const MIN_VIEW: Duration = Duration::from_millis(400);

/// One save of this session, which `u` may withdraw. The rating id stays in the
/// state: ids count every rater's saves, which a blind rater must not see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSave {
    pub rating_id: i64,
    pub image_id: i64,
    pub code: String,
}

#[derive(Debug, Default)]
pub struct RateState {
    /// The images still to rate, `None` until loaded.
    pub work: Option<Vec<i64>>,
    pub from_queue: bool,
    /// Queued images' queue name and strategy.
    pub queues: HashMap<i64, (String, Option<String>)>,
    pub index: usize,
    pub code: String,
    pub error: Option<String>,
    pub review_later: bool,
    /// When the current image was first shown with its previews (or the reason they
    /// failed), for time on task and [`MIN_VIEW`].
    pub shown: Option<(i64, Instant)>,
    /// The least time an image is shown before it is saved ([`MIN_VIEW`]; zero in
    /// tests that press keys faster than anyone rates).
    pub min_view: Duration,
    pub saving: bool,
    /// Saves of this session still in force, newest last; `u` withdraws the last.
    pub saved: Vec<SessionSave>,
}

impl RateState {
    pub fn current(&self) -> Option<i64> {
        self.work.as_ref()?.get(self.index).copied()
    }
}

impl RateState {
    /// A key added to the pending code, refused with the reason when the code would
    /// not parse.
    pub fn type_code(&mut self, has_rater: bool, key: char) -> RateOutcome {
        if !has_rater {
            return RateOutcome::say(NO_RATER);
        }
        let candidate = format!("{}{key}", self.code);
        match parse_code(&candidate) {
            Ok(_) => {
                self.code = candidate;
                self.error = None;
            }
            Err(reason) => self.error = Some(format!("'{candidate}' refused: {reason}")),
        }
        RateOutcome::default()
    }

    /// Forgets the code, the review flag and the time the image was shown.
    pub fn reset_pending_code(&mut self) {
        self.code.clear();
        self.error = None;
        self.review_later = false;
        self.shown = None;
    }

    /// The rating to save for the current image, with its time on task; nothing while
    /// a save is in flight.
    pub fn save(&mut self, rater: Option<&str>) -> RateOutcome {
        let Some(rater) = rater else {
            return RateOutcome::say(NO_RATER);
        };
        if self.saving {
            return RateOutcome::default();
        }
        let Some(image_id) = self.current() else {
            return RateOutcome::default();
        };
        let parsed = match parse_code(&self.code) {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.error = Some(reason);
                return RateOutcome::default();
            }
        };
        let Some(on_screen) = self
            .shown
            .filter(|(id, _)| *id == image_id)
            .map(|(_, at)| at.elapsed())
        else {
            self.error = Some(format!(
                "image {image_id} is not on screen yet: wait for its previews"
            ));
            return RateOutcome::default();
        };
        if on_screen < self.min_view {
            self.error = Some(format!(
                "image {image_id} was on screen for {} ms only: look at it, then press Enter again",
                on_screen.as_millis()
            ));
            return RateOutcome::default();
        }
        let time_ms = Some(on_screen.as_millis() as i64);
        let mut rating = NewRating {
            image_id,
            rater: rater.to_string(),
            code: self.code.clone(),
            time_ms,
            review_later: self.review_later,
            source: "tui".into(),
            ..NewRating::default()
        };
        parsed.apply_to(&mut rating);
        self.saving = true;
        RateOutcome {
            save: Some(rating),
            ..RateOutcome::default()
        }
    }

    /// The store saved the rating (the image leaves the work list) or refused it.
    pub fn on_saved(&mut self, result: Result<(i64, i64), String>) -> RateOutcome {
        self.saving = false;
        match result {
            Ok((rating_id, image_id)) => {
                let code = std::mem::take(&mut self.code);
                // No rating id: ids count every rater's saves, which a blind rater must
                // not learn.
                let message = format!("saved image {image_id} as '{code}'");
                self.saved.push(SessionSave {
                    rating_id,
                    image_id,
                    code,
                });
                if let Some(work) = self.work.as_mut() {
                    work.retain(|id| *id != image_id);
                    if self.index >= work.len() {
                        self.index = work.len().saturating_sub(1);
                    }
                    if work.is_empty() {
                        // More may wait beyond the batch: ask again.
                        self.work = None;
                        self.index = 0;
                    }
                }
                self.reset_pending_code();
                RateOutcome {
                    rated_image: Some(image_id),
                    ..RateOutcome::say(message)
                }
            }
            Err(err) => {
                self.error = Some(format!("not saved: {err}"));
                RateOutcome::default()
            }
        }
    }

    /// `u`: the session's last save to withdraw, or why there is none. Ratings made
    /// before this session, or imported from files, are never withdrawn from here.
    pub fn undo(&mut self, rater: Option<&str>) -> RateOutcome {
        if rater.is_none() {
            return RateOutcome::say(NO_RATER);
        }
        if self.saving {
            return RateOutcome::default();
        }
        match self.saved.last() {
            Some(last) => {
                self.saving = true;
                RateOutcome {
                    undo: Some(last.rating_id),
                    ..RateOutcome::default()
                }
            }
            None => RateOutcome::say("nothing to undo: no rating saved in this session"),
        }
    }

    /// The store withdrew the session's last save (its image comes back to rate),
    /// found it overruled since (by a later save or an import), or failed.
    pub fn on_undone(&mut self, result: Result<Option<i64>, String>) -> RateOutcome {
        self.saving = false;
        match result {
            Ok(Some(image_id)) => {
                self.saved.pop();
                let work = self.work.get_or_insert_with(Vec::new);
                match work.iter().position(|id| *id == image_id) {
                    Some(at) => self.index = at,
                    None => {
                        let at = self.index.min(work.len());
                        work.insert(at, image_id);
                        self.index = at;
                    }
                }
                self.reset_pending_code();
                RateOutcome {
                    rated_image: Some(image_id),
                    // No rating id, as after a save.
                    ..RateOutcome::say(format!("undid your rating of image {image_id}"))
                }
            }
            Ok(None) => match self.saved.pop() {
                Some(gone) => RateOutcome::say(format!(
                    "your rating of image {} is no longer in force (a later save or import replaced it): nothing undone",
                    gone.image_id
                )),
                None => RateOutcome::say("nothing to undo: no rating saved in this session"),
            },
            Err(err) => RateOutcome::say(format!("undo failed: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_leaves_the_work_list_and_an_undo_brings_the_image_back() {
        let mut rate = RateState {
            work: Some(vec![10, 11, 12]),
            index: 1,
            ..RateState::default()
        };
        assert_eq!(rate.type_code(false, 'a'), RateOutcome::say(NO_RATER));
        assert_eq!(rate.save(None), RateOutcome::say(NO_RATER));
        assert_eq!(
            rate.undo(Some("ann")),
            RateOutcome::say("nothing to undo: no rating saved in this session"),
            "ratings from before the session are not the session's to undo"
        );
        rate.type_code(true, 'r');
        rate.type_code(true, 'a');
        assert!(
            rate.error
                .as_deref()
                .is_some_and(|e| e.contains("'ra' refused"))
        );
        assert_eq!(rate.code, "r", "a refused key is not kept");
        // Not on screen yet: nothing is saved, the code is kept.
        assert_eq!(rate.save(Some("ann")), RateOutcome::default());
        assert!(
            rate.error
                .as_deref()
                .is_some_and(|e| e.contains("not on screen yet"))
        );
        rate.shown = Some((11, Instant::now()));
        let asked = rate.save(Some("ann"));
        let rating = asked.save.expect("a rating to save");
        assert_eq!(
            (
                rating.image_id,
                rating.usable,
                rating.rater.as_str(),
                rating.reject_reason.as_deref()
            ),
            (11, false, "ann", Some("other"))
        );
        assert_eq!(
            rate.save(Some("ann")),
            RateOutcome::default(),
            "one save in flight"
        );
        let saved = rate.on_saved(Ok((7, 11)));
        assert_eq!(saved.rated_image, Some(11));
        assert_eq!(saved.message.as_deref(), Some("saved image 11 as 'r'"));
        assert_eq!(
            (rate.work.clone(), rate.current()),
            (Some(vec![10, 12]), Some(12))
        );
        assert!(rate.code.is_empty() && !rate.saving);
        // `u` names the session's last save, by its id.
        assert_eq!(rate.undo(Some("ann")).undo, Some(7));
        let undone = rate.on_undone(Ok(Some(11)));
        assert_eq!(undone.rated_image, Some(11));
        assert_eq!(rate.current(), Some(11), "the undone image is shown again");
        assert!(rate.saved.is_empty(), "an undone save leaves the list");
        let refused = rate.on_saved(Err("the store is busy".into()));
        assert_eq!(refused, RateOutcome::default());
        assert_eq!(rate.error.as_deref(), Some("not saved: the store is busy"));
    }

    #[test]
    fn a_save_waits_until_the_image_was_on_screen_long_enough() {
        // Enter pressed twice saved the next image as good 3 ms after it appeared.
        let mut rate = RateState {
            work: Some(vec![10, 11]),
            min_view: MIN_VIEW,
            ..RateState::default()
        };
        rate.shown = Some((10, Instant::now()));
        assert_eq!(rate.save(Some("ann")), RateOutcome::default());
        assert!(
            rate.error
                .as_deref()
                .is_some_and(|e| e.contains("on screen for") && e.contains("press Enter again")),
            "{:?}",
            rate.error
        );
        rate.shown = Instant::now()
            .checked_sub(MIN_VIEW)
            .map(|earlier| (10, earlier));
        let asked = rate.save(Some("ann"));
        let rating = asked.save.expect("saved once the image was seen");
        assert!(
            rating
                .time_ms
                .is_some_and(|ms| ms >= MIN_VIEW.as_millis() as i64)
        );
    }

    #[test]
    fn an_undo_of_a_save_overruled_since_withdraws_nothing_and_says_so() {
        let mut rate = RateState {
            saved: vec![SessionSave {
                rating_id: 4,
                image_id: 9,
                code: "a".into(),
            }],
            ..RateState::default()
        };
        assert_eq!(rate.undo(Some("ann")).undo, Some(4));
        let said = rate.on_undone(Ok(None));
        assert!(
            said.message
                .as_deref()
                .is_some_and(|m| m.contains("image 9 is no longer in force")),
            "{said:?}"
        );
        assert!(rate.saved.is_empty() && !rate.saving);
    }

    #[test]
    fn valid_codes() {
        assert_eq!(parse_code(""), Ok(ParsedCode::default()));
        let c = parse_code("kaaz").expect("valid");
        assert_eq!((c.gado, c.motion, c.contrast, c.noise), (true, 2, 1, 0));
        assert_eq!(parse_code("dd").expect("valid").noise, 2);
        assert_eq!(parse_code("zaz"), parse_code("azz"));
        assert!(parse_code("r").expect("valid").reject);
    }

    #[test]
    fn invalid_codes_say_why() {
        for bad in ["aaa", "rr", "kk", "ra", "kr", "rd", "x", "zzz", "R"] {
            let err = parse_code(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_code("ra").unwrap_err().contains("stands alone"));
        assert!(parse_code("aaa").unwrap_err().contains("at most twice"));
    }

    #[test]
    fn describes_tiers() {
        assert_eq!(
            describe(&parse_code("az").expect("valid")),
            "medium: motion moderate, contrast moderate, noise none"
        );
        assert_eq!(describe(&parse_code("r").expect("valid")), "reject");
    }
}
