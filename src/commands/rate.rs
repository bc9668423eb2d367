//! `cdwqc rate`: the line-mode rating loop for terminals without the dashboard. Shows
//! the next image of the rater's queue (three preview slices), reads a protocol code,
//! saves it at once; `u` undoes the last save by appending a correcting row.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::imaging::preview::Gray8;
use crate::protocol::Rating;
use crate::rate::halfblock::{GrayImage, render_ansi, render_plain};
use crate::store::ratings::NewRating;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct RateArgs {
    /// Who is rating (added as a rater if new).
    #[arg(long)]
    pub rater: String,
    /// Work this queue only (default: all of the rater's queues).
    #[arg(long)]
    pub queue: Option<String>,
    /// Width of the three previews together, in terminal columns.
    #[arg(long, default_value_t = 96)]
    pub width: usize,
}

const HELP: &str = "keys: r reject · k gadolinium · a/aa motion · z/zz contrast · d/dd noise · \
                    empty line = good · u undo · s skip · ? help · q quit";

fn previews(store: &Store, image_id: i64, width: usize, colour: bool) -> anyhow::Result<String> {
    let pngs = store.preview_pngs(image_id)?;
    let mut images = Vec::new();
    for (_, png) in &pngs {
        let g = Gray8::from_png(png)?;
        images.push(
            GrayImage::new(g.width, g.height, g.pixels)?.downscale_to_width((width / 3).max(8)),
        );
    }
    if images.is_empty() {
        return Ok("(no previews stored for this image)\n".into());
    }
    let row = GrayImage::side_by_side(&images, 2);
    Ok(if colour {
        render_ansi(&row)
    } else {
        render_plain(&row)
    })
}

pub fn run(db: &Path, args: RateArgs) -> anyhow::Result<ExitCode> {
    let mut store = Store::open(db, Access::ReadWrite)?;
    crate::store::raters::validate_name(&args.rater).map_err(anyhow::Error::msg)?;
    if !store.raters()?.iter().any(|r| r.name == args.rater) {
        store.check_new_rater_case(&args.rater)?;
        store.add_rater(&args.rater, crate::store::raters::Role::Rater)?;
        println!("added rater {}", args.rater);
    }
    let colour = std::io::stdout().is_terminal();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut skipped: Vec<i64> = Vec::new();
    let mut saved = 0usize;
    // This session's saves still in force, newest last: (rating id, image id). `u`
    // withdraws the last; ratings made before the session are never withdrawn here.
    let mut undoable: Vec<(i64, i64)> = Vec::new();
    println!("{HELP}");
    'images: loop {
        let Some(next) = store.next_image_for(&args.rater, args.queue.as_deref(), &skipped)? else {
            println!(
                "nothing left to rate for {} ({saved} saved this session)",
                args.rater
            );
            break;
        };
        print!("{}", previews(&store, next.image_id, args.width, colour)?);
        println!(
            "image {} · {}{} · {} left",
            next.image_id,
            next.label,
            next.queue
                .as_ref()
                .map(|q| format!(" · queue {q}"))
                .unwrap_or_default(),
            next.remaining
        );
        let shown = Instant::now();
        loop {
            print!("code> ");
            std::io::stdout().flush().context("writing the prompt")?;
            let Some(line) = lines.next() else {
                println!();
                break 'images;
            };
            let line = line.context("reading the code")?;
            match line.trim() {
                "q" => break 'images,
                "?" => println!("{HELP}"),
                "s" => {
                    skipped.push(next.image_id);
                    continue 'images;
                }
                "u" => match undoable.pop() {
                    // Rating ids count every rater's saves, which a blind rater must
                    // not learn: the image is named instead.
                    Some((rating_id, image_id)) => {
                        match store.undo_rating(&args.rater, rating_id, "line")? {
                            Some(_) => {
                                println!("withdrew your last rating, of image {image_id}");
                                skipped.retain(|&i| i != image_id);
                                continue 'images;
                            }
                            None => println!(
                                "your rating of image {image_id} is no longer in force (a later save or import replaced it): nothing undone"
                            ),
                        }
                    }
                    None => println!("nothing to undo: no rating saved in this session"),
                },
                code => match Rating::from_code(code) {
                    Ok(rating) => {
                        let new = NewRating {
                            image_id: next.image_id,
                            rater: args.rater.clone(),
                            usable: rating.is_usable(),
                            reject_reason: rating
                                .usable
                                .reject_reason()
                                .map(|r| r.name().to_string()),
                            gado: rating.gado,
                            motion: rating.motion.level(),
                            contrast: rating.contrast.level(),
                            noise: rating.noise.level(),
                            code: rating.code(),
                            time_ms: Some(shown.elapsed().as_millis() as i64),
                            source: "line".into(),
                            ..NewRating::default()
                        };
                        let ids = store.save_ratings(&[new])?;
                        undoable.extend(ids.first().map(|&id| (id, next.image_id)));
                        saved += 1;
                        println!(
                            "saved image {}: {} ({})",
                            next.image_id,
                            display_code(&rating),
                            rating.tier()
                        );
                        continue 'images;
                    }
                    Err(e) => println!("{e}"),
                },
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn display_code(r: &Rating) -> String {
    let c = r.code();
    if c.is_empty() { "good".into() } else { c }
}
