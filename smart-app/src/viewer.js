// The study viewer: the windowed original on a canvas at source resolution, window/level
// presets applied to its grey values, the saliency heat map (RGBA, alpha from the map) drawn
// over it with an adjustable opacity, the lesion box, a segmentation's outline, and zoom by CSS
// scale (pixels stay crisp).

export class Viewer {
  /** Window presets on the stored 8-bit windowed image: centre and width in grey levels. */
  static PRESETS = [
    { id: "stored", label: "As stored", center: 128, width: 256 },
    { id: "contrast", label: "High contrast", center: 128, width: 128 },
    { id: "bright", label: "Bright structures", center: 180, width: 150 },
    { id: "dark", label: "Dark structures", center: 70, width: 150 },
    { id: "invert", label: "Inverted", center: 128, width: -256 },
  ];

  constructor(canvas, wrap) {
    this.canvas = canvas;
    this.wrap = wrap;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.opts = { overlay: true, opacity: 0.5, bbox: true, preset: "stored" };
    this.zoom = 1;
  }

  /** `mask`: a segmentation's class map on the picture's grid (0 background), or null. */
  load(image, heatmap, box, mask = null) {
    this.image = image;
    this.heatmap = heatmap;
    this.box = box;
    this.outline = mask ? Viewer.outline(mask, image.width, image.height) : null;
    this.canvas.width = image.width;
    this.canvas.height = image.height;
    const scratch = new OffscreenCanvas(image.width, image.height).getContext("2d", { willReadFrequently: true });
    scratch.drawImage(image, 0, 0);
    this.gray = scratch.getImageData(0, 0, image.width, image.height);
    this.setZoom(this.fitZoom());
    this.draw();
  }

  /** The pixels on a region's edge: labelled, with a 4-neighbour of another class (or the
   *  image border). Drawn over everything, so the outline shows what the model segmented. */
  static outline(mask, width, height) {
    const scratch = new OffscreenCanvas(width, height).getContext("2d", { willReadFrequently: true });
    scratch.drawImage(mask, 0, 0, width, height);
    const m = scratch.getImageData(0, 0, width, height).data;
    const at = (x, y) => m[(y * width + x) * 4];
    const edge = [];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const c = at(x, y);
        if (c === 0) continue;
        if (x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
            at(x - 1, y) !== c || at(x + 1, y) !== c || at(x, y - 1) !== c || at(x, y + 1) !== c) edge.push(y * width + x);
      }
    }
    return edge;
  }

  set(opts) {
    Object.assign(this.opts, opts);
    if (this.image) this.draw();
  }

  fitZoom() {
    if (!this.image) return 1;
    const avail = Math.max(200, Math.min(this.wrap.parentElement.clientWidth - 4, 1024));
    return Math.max(0.25, Math.min(4, avail / this.image.width));
  }

  setZoom(z) {
    this.zoom = Math.max(0.25, Math.min(8, z));
    if (!this.image) return;
    this.canvas.style.width = `${Math.round(this.image.width * this.zoom)}px`;
    this.canvas.style.height = `${Math.round(this.image.height * this.zoom)}px`;
  }

  draw() {
    const { width, height } = this.canvas;
    const p = Viewer.PRESETS.find((x) => x.id === this.opts.preset) || Viewer.PRESETS[0];
    const lut = new Uint8ClampedArray(256);
    const lo = p.center - Math.abs(p.width) / 2;
    for (let v = 0; v < 256; v++) {
      const t = (v - lo) / Math.abs(p.width);
      lut[v] = Math.round(255 * Math.min(1, Math.max(0, p.width < 0 ? 1 - t : t)));
    }
    const out = new ImageData(width, height);
    const src = this.gray.data;
    for (let i = 0; i < src.length; i += 4) {
      const g = lut[src[i]];
      out.data[i] = g; out.data[i + 1] = g; out.data[i + 2] = g; out.data[i + 3] = 255;
    }
    this.ctx.putImageData(out, 0, 0);
    if (this.opts.overlay && this.heatmap) {
      this.ctx.globalAlpha = this.opts.opacity;
      this.ctx.drawImage(this.heatmap, 0, 0);
      this.ctx.globalAlpha = 1;
    }
    if (this.opts.bbox && this.box) {
      this.ctx.strokeStyle = "#00e5ff";
      this.ctx.lineWidth = Math.max(1, Math.round(width / 200));
      this.ctx.setLineDash([4, 2]);
      this.ctx.strokeRect(this.box.x + 0.5, this.box.y + 0.5, this.box.width, this.box.height);
      this.ctx.setLineDash([]);
    }
    if (this.outline && this.outline.length) {
      const img = this.ctx.getImageData(0, 0, width, height);
      for (const i of this.outline) {
        img.data[i * 4] = 255; img.data[i * 4 + 1] = 0; img.data[i * 4 + 2] = 255; img.data[i * 4 + 3] = 255;
      }
      this.ctx.putImageData(img, 0, 0);
    }
    this.canvas.dataset.outline = String(this.outline ? this.outline.length : 0);
    this.canvas.dataset.drawn = `${this.opts.overlay ? "overlay" : "original"}-${this.opts.preset}`;
  }
}
