//! Runs a sweep grid and prints its markdown table, with the wall-clock
//! time on stderr:
//!
//! `cargo run --release -p evac-sweep --example sweep -- examples/sweep.toml`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sweep GRID.toml");
        return ExitCode::from(2);
    };
    let grid = match evac_sweep::Grid::from_path(&path) {
        Ok(grid) => grid,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let rows = match evac_sweep::run(&grid) {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = started.elapsed();
    println!("## {}\n", grid.name);
    print!("{}", evac_sweep::markdown_table(&rows));
    eprintln!(
        "{} evacuations in {:.2} s on {} threads",
        rows.len(),
        elapsed.as_secs_f64(),
        rayon::current_num_threads()
    );
    ExitCode::SUCCESS
}
