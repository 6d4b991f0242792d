//! A small rasteriser for [`crate::plot::Figure`] and a PNG writer, so `--plot FILE.png` needs
//! no image library: filled rectangles, thick (optionally dashed) polylines, text in a built-in
//! 5x7 bitmap font, and a zlib stream with fixed-Huffman deflate that encodes runs against the
//! previous pixel and the previous row (which is most of a chart).

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
    // Each row starts with filter type 0 (none).
    let stride = width as usize * 3;
    let mut raw = Vec::with_capacity((stride + 1) * height as usize);
    for row in rgb.chunks(stride) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter method, no interlace
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib(&raw, &[3, stride + 1]));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, the one PNG and zlib's gzip use), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

/// Bits written least significant first, as deflate wants.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    buffer: u64,
    count: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        self.buffer |= u64::from(value) << self.count;
        self.count += count;
        while self.count >= 8 {
            self.out.push(self.buffer as u8);
            self.buffer >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn code(&mut self, code: u32, length: u32) {
        self.bits(code.reverse_bits() >> (32 - length), length);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push(self.buffer as u8);
        }
        self.out
    }
}

const LENGTH_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/// The fixed Huffman code of a literal/length symbol (RFC 1951, 3.2.6).
fn literal_length_code(symbol: u32) -> (u32, u32) {
    match symbol {
        0..=143 => (0x30 + symbol, 8),
        144..=255 => (0x190 + symbol - 144, 9),
        256..=279 => (symbol - 256, 7),
        _ => (0xC0 + symbol - 280, 8),
    }
}

/// zlib stream of one fixed-Huffman deflate block. Matches are tried only at the given
/// distances (for an image: one pixel back and one row back).
fn zlib(data: &[u8], distances: &[usize]) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(1, 1); // final block
    w.bits(1, 2); // fixed Huffman codes
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0usize);
        for &distance in distances {
            if distance == 0 || distance > i || distance > 32_768 {
                continue;
            }
            let limit = (data.len() - i).min(258);
            let length = (0..limit).take_while(|&k| data[i + k] == data[i + k - distance]).count();
            if length > best.0 {
                best = (length, distance);
            }
        }
        if best.0 >= 3 {
            let (length, distance) = best;
            let l = LENGTH_BASE.iter().rposition(|&b| usize::from(b) <= length).expect("length >= 3");
            let (code, bits) = literal_length_code(257 + l as u32);
            w.code(code, bits);
            w.bits((length - usize::from(LENGTH_BASE[l])) as u32, u32::from(LENGTH_EXTRA[l]));
            let d = DISTANCE_BASE.iter().rposition(|&b| usize::from(b) <= distance).expect("distance >= 1");
            w.code(d as u32, 5);
            w.bits((distance - usize::from(DISTANCE_BASE[d])) as u32, u32::from(DISTANCE_EXTRA[d]));
            i += length;
        } else {
            let (code, bits) = literal_length_code(u32::from(data[i]));
            w.code(code, bits);
            i += 1;
        }
    }
    let (code, bits) = literal_length_code(256);
    w.code(code, bits);
    let mut out = vec![0x78, 0x01];
    out.extend(w.finish());
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

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

    /// A minimal inflater for fixed-Huffman blocks, enough to check what `zlib` writes.
    fn inflate_fixed(stream: &[u8]) -> Vec<u8> {
        let data = &stream[2..stream.len() - 4];
        let mut position = 0usize;
        let mut bit = |n: u32| -> u32 {
            let mut value = 0;
            for k in 0..n {
                let b = (data[position / 8] >> (position % 8)) & 1;
                value |= u32::from(b) << k;
                position += 1;
            }
            value
        };
        assert_eq!(bit(1), 1);
        assert_eq!(bit(2), 1);
        let mut out: Vec<u8> = Vec::new();
        loop {
            // Read a fixed literal/length code MSB first: 7 bits, then maybe 8 or 9.
            let mut code = 0u32;
            let mut length = 0;
            let symbol = loop {
                code = (code << 1) | bit(1);
                length += 1;
                match length {
                    7 if code <= 0x17 => break code + 256,
                    8 if (0x30..=0xBF).contains(&code) => break code - 0x30,
                    8 if (0xC0..=0xC7).contains(&code) => break code - 0xC0 + 280,
                    9 if (0x190..=0x1FF).contains(&code) => break code - 0x190 + 144,
                    _ => assert!(length < 9, "bad code"),
                }
            };
            match symbol {
                0..=255 => out.push(symbol as u8),
                256 => break,
                _ => {
                    let l = (symbol - 257) as usize;
                    let len = usize::from(LENGTH_BASE[l]) + bit(u32::from(LENGTH_EXTRA[l])) as usize;
                    let mut d = 0u32;
                    for _ in 0..5 {
                        d = (d << 1) | bit(1);
                    }
                    let d = d as usize;
                    let distance = usize::from(DISTANCE_BASE[d]) + bit(u32::from(DISTANCE_EXTRA[d])) as usize;
                    for _ in 0..len {
                        out.push(out[out.len() - distance]);
                    }
                }
            }
        }
        assert_eq!(u32::from_be_bytes(stream[stream.len() - 4..].try_into().unwrap()), adler32(&out));
        out
    }

    #[test]
    fn deflate_round_trips_literals_and_both_match_distances() {
        let mut data = Vec::new();
        for row in 0..40u32 {
            data.push(0);
            for x in 0..300u32 {
                let v = if (x / 7 + row / 5) % 3 == 0 { 200 } else { (x * 31 + row) as u8 };
                data.extend_from_slice(&[v, v.wrapping_add(1), 255]);
            }
        }
        let stream = zlib(&data, &[3, 901]);
        assert!(stream.len() < data.len());
        assert_eq!(inflate_fixed(&stream), data);
        let plain: Vec<u8> = (0..=255u8).collect();
        assert_eq!(inflate_fixed(&zlib(&plain, &[3])), plain);
    }

    #[test]
    fn the_png_has_its_signature_and_valid_chunks() {
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
        let mut at = 8;
        let mut kinds = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let body = &png[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32(body), crc);
            kinds.push(String::from_utf8_lossy(&body[..4]).to_string());
            if &body[..4] == b"IDAT" {
                let raw = inflate_fixed(&body[4..]);
                assert_eq!(raw.len(), 10 * (1 + 20 * 3));
                // The rectangle's pixel (3, 3) is red.
                let at = 3 * 61 + 1 + 3 * 3;
                assert_eq!(&raw[at..at + 3], &[255, 0, 0]);
            }
            at += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
    }
}
