//! A small rasteriser for [`crate::plot::Figure`]: filled rectangles, thick (optionally dashed)
//! polylines and text in a built-in 5x7 bitmap font, encoded as a PNG by the `png` crate.

use crate::plot::{Anchor, Color, Figure, Shape};

/// Rasterises `figure` and encodes it as an RGB PNG.
pub fn png(figure: &Figure, width: u32, height: u32) -> Vec<u8> {
    let mut canvas = Canvas::new(width as usize, height as usize);
    for shape in &figure.shapes {
        match shape {
            Shape::Rect { x, y, w, h, fill } => canvas.fill_rect(*x, *y, *w, *h, *fill),
            Shape::Line { points, color, width, dashed } => canvas.polyline(points, *color, *width, *dashed),
            Shape::Text { x, y, text, size, anchor, color, bold } => {
                canvas.text(*x, *y, text, *size, *anchor, *color, *bold)
            }
        }
    }
    encode_png(width, height, &canvas.rgb)
}

struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, rgb: vec![0xff; width * height * 3] }
    }

    fn set(&mut self, x: i64, y: i64, color: Color) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let at = (y as usize * self.width + x as usize) * 3;
        self.rgb[at..at + 3].copy_from_slice(&[color.0, color.1, color.2]);
    }

    fn fill_rect(&mut self, x: f64, y: f64, w: f64, h: f64, color: Color) {
        let (x0, y0) = (x.round() as i64, y.round() as i64);
        let (x1, y1) = ((x + w).round() as i64, (y + h).round() as i64);
        for py in y0.max(0)..y1.min(self.height as i64) {
            for px in x0.max(0)..x1.min(self.width as i64) {
                self.set(px, py, color);
            }
        }
    }

    /// A disc of diameter `width` at every half pixel along each segment; dashes of 6 on,
    /// 4 off, as in the SVG.
    fn polyline(&mut self, points: &[(f64, f64)], color: Color, width: f64, dashed: bool) {
        let radius = (width / 2.0).max(0.5);
        let mut travelled = 0.0;
        for pair in points.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            let length = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
            let steps = (length * 2.0).ceil().max(1.0) as usize;
            for i in 0..=steps {
                let f = i as f64 / steps as f64;
                if dashed && (travelled + f * length) % 10.0 >= 6.0 {
                    continue;
                }
                self.disc(x0 + f * (x1 - x0), y0 + f * (y1 - y0), radius, color);
            }
            travelled += length;
        }
    }

    fn disc(&mut self, cx: f64, cy: f64, radius: f64, color: Color) {
        if radius <= 0.5 {
            self.set(cx.floor() as i64, cy.floor() as i64, color);
            return;
        }
        let r = radius.ceil() as i64;
        let (ix, iy) = (cx.floor() as i64, cy.floor() as i64);
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (ix + dx, iy + dy);
                let (ddx, ddy) = (px as f64 + 0.5 - cx, py as f64 + 0.5 - cy);
                if ddx * ddx + ddy * ddy <= radius * radius {
                    self.set(px, py, color);
                }
            }
        }
    }

    /// `y` is the baseline, as in SVG. Text up to 11 units is drawn at 1x (5x7 pixels per
    /// glyph), larger text at 2x.
    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: f64, y: f64, text: &str, size: f64, anchor: Anchor, color: Color, bold: bool) {
        let scale: i64 = if size >= 12.0 { 2 } else { 1 };
        let advance = 6 * scale;
        let width = text.chars().count() as i64 * advance - scale;
        let left = match anchor {
            Anchor::Start => x.round() as i64,
            Anchor::Middle => x.round() as i64 - width / 2,
            Anchor::End => x.round() as i64 - width,
        };
        let top = y.round() as i64 - 7 * scale;
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph(c);
            let gx = left + i as i64 * advance;
            for (row, bits) in glyph.split(' ').enumerate() {
                for (column, bit) in bits.bytes().enumerate() {
                    if bit != b'#' {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale + i64::from(bold) {
                            self.set(gx + column as i64 * scale + sx, top + row as i64 * scale + sy, color);
                        }
                    }
                }
            }
        }
    }
}

/// 5x7 glyphs for ASCII 32..=126, rows top to bottom separated by spaces; `#` is ink.
const GLYPHS: [&str; 95] = [
    "..... ..... ..... ..... ..... ..... .....", // space
    "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..", // !
    ".#.#. .#.#. ..... ..... ..... ..... .....", // "
    ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.", // #
    "..#.. .#### #.#.. .###. ..#.# ####. ..#..", // $
    "##... ##..# ...#. ..#.. .#... #..## ...##", // %
    ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#", // &
    "..#.. ..#.. ..... ..... ..... ..... .....", // '
    "...#. ..#.. .#... .#... .#... ..#.. ...#.", // (
    ".#... ..#.. ...#. ...#. ...#. ..#.. .#...", // )
    "..... ..#.. #.#.# .###. #.#.# ..#.. .....", // *
    "..... ..#.. ..#.. ##### ..#.. ..#.. .....", // +
    "..... ..... ..... ..... .##.. ..#.. .#...", // ,
    "..... ..... ..... ##### ..... ..... .....", // -
    "..... ..... ..... ..... ..... .##.. .##..", // .
    "..... ....# ...#. ..#.. .#... #.... .....", // /
    ".###. #...# #..## #.#.# ##..# #...# .###.", // 0
    "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.", // 1
    ".###. #...# ....# ...#. ..#.. .#... #####", // 2
    "##### ...#. ..#.. ...#. ....# #...# .###.", // 3
    "...#. ..##. .#.#. #..#. ##### ...#. ...#.", // 4
    "##### #.... ####. ....# ....# #...# .###.", // 5
    "..##. .#... #.... ####. #...# #...# .###.", // 6
    "##### ....# ...#. ..#.. .#... .#... .#...", // 7
    ".###. #...# #...# .###. #...# #...# .###.", // 8
    ".###. #...# #...# .#### ....# ...#. .##..", // 9
    "..... .##.. .##.. ..... .##.. .##.. .....", // :
    "..... .##.. .##.. ..... .##.. ..#.. .#...", // ;
    "...#. ..#.. .#... #.... .#... ..#.. ...#.", // <
    "..... ..... ##### ..... ##### ..... .....", // =
    ".#... ..#.. ...#. ....# ...#. ..#.. .#...", // >
    ".###. #...# ....# ...#. ..#.. ..... ..#..", // ?
    ".###. #...# ....# .##.# #.#.# #.#.# .###.", // @
    ".###. #...# #...# ##### #...# #...# #...#", // A
    "####. #...# #...# ####. #...# #...# ####.", // B
    ".###. #...# #.... #.... #.... #...# .###.", // C
    "###.. #..#. #...# #...# #...# #..#. ###..", // D
    "##### #.... #.... ####. #.... #.... #####", // E
    "##### #.... #.... ####. #.... #.... #....", // F
    ".###. #...# #.... #.### #...# #...# .####", // G
    "#...# #...# #...# ##### #...# #...# #...#", // H
    ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", // I
    "..### ...#. ...#. ...#. ...#. #..#. .##..", // J
    "#...# #..#. #.#.. ##... #.#.. #..#. #...#", // K
    "#.... #.... #.... #.... #.... #.... #####", // L
    "#...# ##.## #.#.# #.#.# #...# #...# #...#", // M
    "#...# #...# ##..# #.#.# #..## #...# #...#", // N
    ".###. #...# #...# #...# #...# #...# .###.", // O
    "####. #...# #...# ####. #.... #.... #....", // P
    ".###. #...# #...# #...# #.#.# #..#. .##.#", // Q
    "####. #...# #...# ####. #.#.. #..#. #...#", // R
    ".#### #.... #.... .###. ....# ....# ####.", // S
    "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..", // T
    "#...# #...# #...# #...# #...# #...# .###.", // U
    "#...# #...# #...# #...# #...# .#.#. ..#..", // V
    "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", // W
    "#...# #...# .#.#. ..#.. .#.#. #...# #...#", // X
    "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", // Y
    "##### ....# ...#. ..#.. .#... #.... #####", // Z
    ".###. .#... .#... .#... .#... .#... .###.", // [
    "..... #.... .#... ..#.. ...#. ....# .....", // backslash
    ".###. ...#. ...#. ...#. ...#. ...#. .###.", // ]
    "..#.. .#.#. #...# ..... ..... ..... .....", // ^
    "..... ..... ..... ..... ..... ..... #####", // _
    ".#... ..#.. ..... ..... ..... ..... .....", // `
    "..... ..... .###. ....# .#### #...# .####", // a
    "#.... #.... #.##. ##..# #...# #...# ####.", // b
    "..... ..... .###. #.... #.... #...# .###.", // c
    "....# ....# .##.# #..## #...# #...# .####", // d
    "..... ..... .###. #...# ##### #.... .###.", // e
    "..##. .#..# .#... ###.. .#... .#... .#...", // f
    "..... .#### #...# #...# .#### ....# .###.", // g
    "#.... #.... #.##. ##..# #...# #...# #...#", // h
    "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.", // i
    "...#. ..... ..##. ...#. ...#. #..#. .##..", // j
    "#.... #.... #..#. #.#.. ##... #.#.. #..#.", // k
    ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", // l
    "..... ..... ##.#. #.#.# #.#.# #...# #...#", // m
    "..... ..... #.##. ##..# #...# #...# #...#", // n
    "..... ..... .###. #...# #...# #...# .###.", // o
    "..... ..... ####. #...# ####. #.... #....", // p
    "..... ..... .##.# #..## .#### ....# ....#", // q
    "..... ..... #.##. ##..# #.... #.... #....", // r
    "..... ..... .###. #.... .###. ....# ####.", // s
    ".#... .#... ###.. .#... .#... .#..# ..##.", // t
    "..... ..... #...# #...# #...# #..## .##.#", // u
    "..... ..... #...# #...# #...# .#.#. ..#..", // v
    "..... ..... #...# #...# #.#.# #.#.# .#.#.", // w
    "..... ..... #...# .#.#. ..#.. .#.#. #...#", // x
    "..... ..... #...# #...# .#### ....# .###.", // y
    "..... ..... ##### ...#. ..#.. .#... #####", // z
    "...#. ..#.. ..#.. .#... ..#.. ..#.. ...#.", // {
    "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..", // |
    ".#... ..#.. ..#.. ...#. ..#.. ..#.. .#...", // }
    "..... ..... .#... #.#.# ...#. ..... .....", // ~
];

/// Characters outside printable ASCII are drawn as `?`.
fn glyph(c: char) -> &'static str {
    let index = (c as u32).wrapping_sub(32) as usize;
    GLYPHS.get(index).copied().unwrap_or(GLYPHS[usize::from(b'?' - 32)])
}

fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(rgb.len(), width as usize * height as usize * 3);
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Charts are mostly runs of one colour: the previous-row filter and default compression
    // keep them small.
    encoder.set_filter(png::Filter::Up);
    let mut writer = encoder.write_header().expect("a valid RGB header writes to memory");
    writer.write_image_data(rgb).expect("the image has width * height RGB pixels");
    writer.finish().expect("writing to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_five_by_seven() {
        for (i, g) in GLYPHS.iter().enumerate() {
            let rows: Vec<&str> = g.split(' ').collect();
            assert_eq!(rows.len(), 7, "glyph {i}");
            assert!(rows.iter().all(|r| r.len() == 5 && r.bytes().all(|b| b == b'#' || b == b'.')), "glyph {i}");
        }
        assert_eq!(glyph('A'), GLYPHS[33]);
        assert_eq!(glyph('\u{e9}'), glyph('?'));
    }

    #[test]
    fn the_png_decodes_to_the_rasterised_pixels() {
        let mut figure = Figure::default();
        figure.shapes.push(Shape::Rect { x: 1.0, y: 1.0, w: 5.0, h: 5.0, fill: Color(255, 0, 0) });
        figure.shapes.push(Shape::Line {
            points: vec![(0.0, 0.0), (19.0, 9.0)],
            color: Color(0, 0, 255),
            width: 2.0,
            dashed: true,
        });
        figure.shapes.push(Shape::Text {
            x: 10.0,
            y: 9.0,
            text: "Hi".into(),
            size: 11.0,
            anchor: Anchor::Middle,
            color: Color(0, 0, 0),
            bold: false,
        });
        let png = png(&figure, 20, 10);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a valid PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("small image")];
        let info = reader.next_frame(&mut pixels).expect("one frame");
        assert_eq!((info.width, info.height, info.color_type), (20, 10, png::ColorType::Rgb));
        // The rectangle's pixel (3, 3) is red; a corner outside every shape is the background.
        let pixel = |x: usize, y: usize| &pixels[(y * 20 + x) * 3..(y * 20 + x) * 3 + 3];
        assert_eq!(pixel(3, 3), [255, 0, 0]);
        assert_ne!(pixel(19, 0), [255, 0, 0]);
    }
}
