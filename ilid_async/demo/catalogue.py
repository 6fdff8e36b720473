"""Deterministic product catalogue of the bundled demo shop.

The demo shop imitates an industrial-parts web shop so that the crawler, the filters and the
downloader can be exercised offline. Everything here is pure: the same (n_products, seed)
always gives the same catalogue, so tests and benchmarks can rely on exact counts.

The catalogue deliberately contains the awkward cases a real shop has:
- products whose gallery holds only the placeholder ``no-image.svg`` (no usable image, so the
  crawler yields no record for them),
- pairs of cross-listed variants that share the same image URL (the pre-filter's dedup rule),
- products whose name is only digits, e.g. "4711 0815" (the label is empty after the
  pre-filter deletes digit runs),
- galleries that start with a PNG (some with alpha) and then a JPEG, and a spread of sizes
  and aspect ratios up to 2000 x 1500.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable, ClassVar

__all__ = [
    "TRADENAMES", "PLACEHOLDER_NAME", "Image", "PLACEHOLDER", "Category", "Product", "Catalogue", "DIGIT_ONLY",
    "FINISHES", "CATEGORIES", "LARGEST_SIZE", "build_catalogue"
]

# Tradenames used in product names and descriptions. shops/demo.toml carries the same list,
# lower-cased, as its tradename regex, so the pre-filter can strip them from labels.
TRADENAMES: list[str] = [
    "ProLine",
    "FixMaster",
    "Ameise",
    "Torquex",
    "Klemmfix",
    "Rollomat",
    "Glidera",
    "LiftPro",
    "Inoxa",
    "Normatec",
    "Vibrastop",
    "Gasoflex",
]

# Placeholder shown by the shop when a product has no photo. It is an SVG, which is not an
# allowed image ending, so such products yield no record.
PLACEHOLDER_NAME = "no-image.svg"


@dataclass(frozen=True)
class Image:
    """One gallery image, served at /img/{name}. Frozen so it can key the render cache."""

    name: str
    format: str  # "JPEG", "PNG" or "SVG"
    width: int
    height: int
    colour_seed: int  # drives the drawing, so every image looks different
    alpha: bool = False  # PNG with a transparent background

    @property
    def content_type(self) -> str:
        return {"JPEG": "image/jpeg", "PNG": "image/png", "SVG": "image/svg+xml"}[self.format]


PLACEHOLDER = Image(PLACEHOLDER_NAME, "SVG", 400, 400, 0)


@dataclass(frozen=True)
class Category:
    slug: str  # URL part: /c/{slug}
    code: str  # two-letter SKU prefix
    title: str
    blurb: str  # intro text on the category page


@dataclass
class Product:
    sku: str
    slug: str
    category: str  # Category.slug
    name: str
    description: str
    specs: list[tuple[str, str]]
    images: list[Image]
    tradename: str | None  # brand shown in JSON-LD, None for unbranded parts
    price: float  # EUR, net
    lastmod: str  # ISO date for the sitemap's <lastmod>
    # What the page says in words, for checking labels against (benchmarks/bench_label_quality.py):
    kind: str = ""  # the type of product without codes or sizes, e.g. "Deep groove ball bearing"
    material: str = ""  # as in the spec table, e.g. "stainless steel 1.4301"
    finish: str = ""

    @property
    def has_image(self) -> bool:
        """True when the gallery holds at least one real (JPEG/PNG) image."""
        return any(img.format in ("JPEG", "PNG") for img in self.images)


@dataclass
class Catalogue:
    products: list[Product]
    categories: list[Category]
    TRADENAMES: ClassVar[list[str]] = TRADENAMES
    # Lookup tables, filled in __post_init__.
    _by_slug: dict[str, Product] = field(default_factory=dict, init=False, repr=False)
    _images: dict[str, Image] = field(default_factory=dict, init=False, repr=False)
    _categories: dict[str, Category] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_slug = {p.slug: p for p in self.products}
        self._images = {img.name: img for p in self.products for img in p.images}
        self._images.setdefault(PLACEHOLDER.name, PLACEHOLDER)
        self._categories = {c.slug: c for c in self.categories}

    def product_by_slug(self, slug: str) -> Product | None:
        return self._by_slug.get(slug)

    def image_by_name(self, name: str) -> Image | None:
        return self._images.get(name)

    def category_by_slug(self, slug: str) -> Category | None:
        return self._categories.get(slug)

    def products_in(self, category_slug: str) -> list[Product]:
        return [p for p in self.products if p.category == category_slug]

    @property
    def images(self) -> list[Image]:
        """Every distinct image (placeholder included), in catalogue order."""
        return list(self._images.values())

    # Counts of the awkward cases, for tests and for people reading crawl statistics.
    def no_image_products(self) -> list[Product]:
        return [p for p in self.products if not p.has_image]

    def digit_only_products(self) -> list[Product]:
        return [p for p in self.products if DIGIT_ONLY.fullmatch(p.name)]

    def shared_image_products(self) -> list[Product]:
        """Products whose image URL also appears in another product's gallery."""
        owners: dict[str, set[str]] = {}
        for p in self.products:
            for img in p.images:
                if img.format != "SVG":
                    owners.setdefault(img.name, set()).add(p.sku)
        shared = {name for name, skus in owners.items() if len(skus) > 1}
        return [p for p in self.products if any(i.name in shared for i in p.images)]


# A name made of digits and blanks only: the pre-filter deletes digit runs, leaving nothing.
DIGIT_ONLY = re.compile(r"[\d ]+")


# --------------------------------------------------------------------------------------------
# Vocabulary. Materials map to the finishes that make sense for them.

FINISHES: dict[str, list[str]] = {
    "stainless steel 1.4301": ["brushed", "electropolished", "matt blasted", "bright"],
    "stainless steel 1.4404": ["electropolished", "matt blasted", "brushed"],
    "steel": ["bright zinc-plated", "blue zinc-plated", "black powder-coated", "blank, oiled",
              "yellow chromated"],
    "steel S235JR": ["RAL 2004 pure orange powder-coated", "RAL 5010 gentian blue powder-coated",
                     "RAL 7035 light grey powder-coated", "hot-dip galvanised"],
    "steel Cf53, induction-hardened": ["blank, oiled", "black chrome-plated",
                                       "thin dense chrome-plated"],
    "bearing steel 100Cr6": ["blank, oiled", "burnished"],
    "aluminium": ["anodised natural", "anodised black", "blank"],
    "aluminium AlMgSi0.5": ["anodised natural", "anodised black"],
    "zinc die-cast": ["black powder-coated", "chrome-plated", "silver powder-coated",
                      "matt nickel-plated"],
    "brass": ["nickel-plated", "polished", "blank"],
    "cast iron": ["black painted", "primed grey"],
    "polyamide PA6": ["grey RAL 7035", "black, matt"],
    "polyamide PA66, glass-fibre reinforced": ["black, matt", "grey, matt"],
    "polypropylene": ["grey", "black"],
    "POM": ["black", "natural white"],
}


@dataclass
class _Part:
    """What a category generator decides about one product before the common assembly."""

    stem: str  # product type, e.g. "Vertical toggle clamp"
    size: str  # size text for the name, e.g. "M8 x 40" or "2,400 N"
    specs: list[tuple[str, str]]
    facts: str  # a sentence with numbers for the description
    material: str
    weight_kg: float
    price: float
    kind: str = ""  # the stem without codes, where the stem has them; "" = the stem


def _n(value: float) -> str:
    """English number with thousands separators, no trailing '.0'."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _kg(weight: float) -> str:
    return f"{weight:.2f} kg" if weight < 10 else f"{weight:.1f} kg"


def _hinge(rng: random.Random) -> _Part:
    stem = rng.choice(["Butt hinge", "Lift-off hinge", "Concealed hinge", "Piano hinge",
                       "Flag hinge", "Weld-on hinge", "Spring-loaded hinge"])
    material = rng.choice(["stainless steel 1.4301", "stainless steel 1.4404", "steel",
                           "aluminium", "zinc die-cast", "brass"])
    if stem == "Piano hinge":
        length, width = rng.choice([500, 1000, 1500, 2000, 3500]), rng.choice([25, 32, 40, 50])
        size = f"{length} x {width} mm"
        load = rng.randrange(200, 900, 50)
        weight = length * width * 0.0000012 * 8
    else:
        height = rng.choice([30, 40, 50, 60, 80, 100, 120])
        width = rng.choice([30, 40, 50, 60, 80])
        size = f"{height} x {width} mm"
        load = rng.randrange(150, 2400, 50)
        weight = height * width * 0.00004
    angle = rng.choice([120, 180, 270])
    specs = [("Dimensions (H x W)", size),
             ("Leaf thickness", f"{rng.choice([1.5, 2, 2.5, 3, 4])} mm"),
             ("Pin diameter", f"{rng.choice([3, 4, 5, 6, 8, 10])} mm"),
             ("Opening angle", f"{angle}°"),
             ("Load capacity per pair", f"{_n(load)} N")]
    facts = f"Opens up to {angle}° and carries {_n(load)} N per pair of hinges."
    return _Part(stem, size, specs, facts, material, weight, rng.uniform(3, 40))


# Deep groove ball bearings of the 62xx series: (code, bore, outer diameter, width, C kN).
_BEARINGS = [("6200", 10, 30, 9, 5.1), ("6201", 12, 32, 10, 6.8), ("6202", 15, 35, 11, 7.8),
             ("6203", 17, 40, 12, 9.6), ("6204", 20, 47, 14, 12.7), ("6205", 25, 52, 15, 14.0),
             ("6206", 30, 62, 16, 19.5), ("6208", 40, 80, 18, 30.7)]
_UNITS = [("204", 20, 12.8), ("205", 25, 14.0), ("206", 30, 19.5), ("207", 35, 25.7),
          ("208", 40, 29.6)]


def _bearing(rng: random.Random) -> _Part:
    kind = rng.choice(["Deep groove ball bearing", "Pillow block bearing unit",
                       "Flange bearing unit", "Needle roller bearing"])
    if kind == "Deep groove ball bearing":
        code, d, big_d, b, c = rng.choice(_BEARINGS)
        seal = rng.choice(["2RS", "2Z"])
        stem = f"{kind} {code}-{seal}"
        size = f"{d} x {big_d} x {b} mm"
        material = rng.choice(["bearing steel 100Cr6", "stainless steel 1.4404"])
        specs = [("Bore diameter d", f"{d} mm"), ("Outer diameter D", f"{big_d} mm"),
                 ("Width B", f"{b} mm"),
                 ("Seal", "rubber seals both sides" if seal == "2RS"
                  else "metal shields both sides")]
        weight = big_d * big_d * b * 0.0000045
    elif kind == "Needle roller bearing":
        d = rng.choice([10, 12, 15, 20, 25, 30])
        b = rng.choice([10, 12, 16, 20])
        big_d, c = d + 6, round(d * 0.45, 1)
        stem = f"{kind} HK {d}{b:02d}"
        size = f"{d} x {big_d} x {b} mm"
        material = "bearing steel 100Cr6"
        specs = [("Bore diameter d", f"{d} mm"), ("Outer diameter D", f"{big_d} mm"),
                 ("Width B", f"{b} mm"), ("Cage", "drawn cup, open ends")]
        weight = d * b * 0.00003
    else:
        code, d, c = rng.choice(_UNITS)
        prefix = "UCP" if kind.startswith("Pillow") else "UCF"
        stem = f"{kind} {prefix} {code}"
        size = f"{d} mm bore"
        material = "cast iron"
        specs = [("Bore diameter d", f"{d} mm"),
                 ("Housing", "pillow block, 2 bolt holes" if prefix == "UCP"
                  else "square flange, 4 bolt holes"),
                 ("Insert", "bearing steel 100Cr6, set screw locking"),
                 ("Lubrication", "grease nipple, relubricatable")]
        weight = d * 0.03
    static = round(c * rng.uniform(0.5, 0.7), 1)
    speed = rng.randrange(6000, 24000, 500) if "ball" in kind else rng.randrange(4000, 9000, 500)
    specs += [("Dynamic load rating C", f"{c} kN"), ("Static load rating C0", f"{static} kN"),
              ("Limiting speed", f"{_n(speed)} rpm")]
    facts = f"Dynamic load rating {c} kN, limiting speed {_n(speed)} rpm."
    return _Part(stem, size, specs, facts, material, weight, rng.uniform(2, 60), kind=kind)


def _linear(rng: random.Random) -> _Part:
    stem = rng.choice(["Profile rail guide", "Linear guide carriage", "Miniature linear guide",
                       "Roller rail guide", "Telescopic slide"])
    if stem == "Telescopic slide":
        length = rng.choice([300, 350, 400, 450, 500, 600, 700, 800])
        load = rng.choice([45, 80, 120, 160, 227])
        size = f"{length} mm, {load} kg"
        material = rng.choice(["steel", "stainless steel 1.4301"])
        specs = [("Closed length", f"{length} mm"), ("Extension", "full extension, 100 %"),
                 ("Load capacity per pair", f"{load} kg"),
                 ("Mounting", "side mounting, M4 holes")]
        facts = f"Full extension slide, {length} mm closed length, {load} kg per pair."
        weight = length * 0.004
    else:
        width = rng.choice([7, 9, 12] if stem.startswith("Miniature") else [15, 20, 25, 30, 35])
        length = rng.randrange(100, 2000, 100) if width > 12 else rng.randrange(100, 600, 50)
        size = f"size {width}, {length} mm"
        material = ("stainless steel 1.4301" if width <= 12
                    else rng.choice(["steel Cf53, induction-hardened", "bearing steel 100Cr6"]))
        c = round(width * rng.uniform(0.9, 1.8), 1)
        specs = [("Rail width", f"{width} mm"), ("Rail length", f"{length} mm"),
                 ("Carriage", rng.choice(["flanged, standard length", "narrow, long",
                                          "narrow, standard length"])),
                 ("Preload", rng.choice(["light preload", "medium preload", "no preload"])),
                 ("Accuracy class", rng.choice(["N (normal)", "H (high)", "P (precision)"])),
                 ("Dynamic load rating C", f"{c} kN")]
        facts = f"Rail width {width} mm, rail length {_n(length)} mm, dynamic load rating {c} kN."
        weight = width * length * 0.00005
    return _Part(stem, size, specs, facts, material, weight, rng.uniform(20, 400))


def _toggle(rng: random.Random) -> _Part:
    stem = rng.choice(["Vertical toggle clamp", "Horizontal toggle clamp",
                       "Push-pull toggle clamp", "Latch clamp", "Heavy-duty vertical toggle clamp"])
    force = rng.choice([900, 1100, 1800, 2400, 2500, 3500, 5000, 7500, 9000, 16000])
    material = rng.choice(["steel", "steel", "stainless steel 1.4301"])
    base = rng.choice(["flanged base", "straight base"])
    spindle = rng.choice(["M5 x 30", "M6 x 35", "M8 x 50", "M10 x 60", "M12 x 70"])
    arm = rng.choice([90, 100, 105, 180, 210])
    size = f"{_n(force)} N"
    specs = [("Holding capacity", f"{_n(force)} N"), ("Opening angle of clamping arm", f"{arm}°"),
             ("Base", base), ("Clamping spindle", f"{spindle}, supplied"),
             ("Handle grip", rng.choice(["PVC, red, oil-resistant", "PVC, black", "none"]))]
    facts = (f"Holding capacity {_n(force)} N with a clamping arm that opens {arm}°; "
             f"supplied with spindle {spindle}.")
    return _Part(stem, size, specs, facts, material, force * 0.00015, rng.uniform(8, 90))


def _castor(rng: random.Random) -> _Part:
    stem = rng.choice(["Swivel castor", "Swivel castor with total brake", "Fixed castor",
                       "Heavy-duty swivel castor", "Apparatus castor"])
    wheel = rng.choice([50, 75, 80, 100, 125, 160, 200])
    load = int(wheel * rng.uniform(0.8, 3.5) // 10 * 10)
    material = rng.choice(["steel", "stainless steel 1.4301"])
    tyre = rng.choice(["thermoplastic rubber, grey, non-marking", "polyurethane, blue",
                       "polyamide, white", "solid rubber, black"])
    mounting = rng.choice(["top plate 100 x 85 mm", "top plate 60 x 60 mm",
                           "bolt hole 12 mm", "threaded stem M10 x 15", "threaded stem M12 x 25"])
    size = f"{wheel} mm"
    specs = [("Wheel diameter", f"{wheel} mm"),
             ("Wheel width", f"{rng.choice([25, 32, 40, 50])} mm"),
             ("Load capacity", f"{load} kg"), ("Overall height", f"{int(wheel * 1.3)} mm"),
             ("Tyre", tyre), ("Mounting", mounting),
             ("Bearing", rng.choice(["roller bearing", "ball bearing", "plain bearing"]))]
    facts = f"Wheel {wheel} mm with {tyre.split(',')[0]} tyre, load capacity {load} kg per castor."
    return _Part(stem, size, specs, facts, material, wheel * 0.012, rng.uniform(6, 70))


def _pallet_truck(rng: random.Random) -> _Part:
    stem = rng.choice(["Hand pallet truck", "Low-profile pallet truck", "Weighing pallet truck",
                       "Quick-lift pallet truck", "Short-fork pallet truck"])
    capacity = 2000 if stem == "Weighing pallet truck" else rng.choice([2000, 2500, 3000])
    forks = 800 if stem.startswith("Short") else rng.choice([1000, 1150, 1220, 1500])
    lowered = 51 if stem.startswith("Low") else rng.choice([75, 85])
    material = rng.choice(["steel S235JR", "steel S235JR", "stainless steel 1.4301"])
    size = f"{_n(capacity)} kg, {_n(forks)} mm"
    specs = [("Load capacity", f"{_n(capacity)} kg"), ("Fork length", f"{_n(forks)} mm"),
             ("Width over forks", f"{rng.choice([520, 540, 685])} mm"),
             ("Lowered height", f"{lowered} mm"), ("Lift height", f"{lowered + 115} mm"),
             ("Steering wheels", rng.choice(["polyurethane, 200 mm", "rubber, 200 mm"])),
             ("Fork rollers", rng.choice(["tandem, polyamide, 80 mm",
                                          "single, polyurethane, 80 mm"]))]
    facts = f"Lifts {_n(capacity)} kg on {_n(forks)} mm forks from {lowered} mm lowered height."
    return _Part(stem, size, specs, facts, material, rng.uniform(58, 110), rng.uniform(290, 1900))


def _scissor(rng: random.Random) -> _Part:
    stem = rng.choice(["Scissor lift table", "Mobile scissor lift table",
                       "Double scissor lift table", "Electric scissor lift table"])
    capacity = rng.choice([150, 300, 500, 800, 1000])
    platform = rng.choice(["815 x 500 mm", "900 x 500 mm", "1010 x 520 mm", "1300 x 800 mm",
                           "1600 x 1000 mm"])
    low = rng.choice([285, 340, 420])
    high = low + rng.choice([455, 660, 1000, 1300]) * (2 if stem.startswith("Double") else 1)
    material = rng.choice(["steel S235JR", "steel S235JR", "stainless steel 1.4301"])
    size = f"{_n(capacity)} kg, {platform}"
    specs = [("Load capacity", f"{_n(capacity)} kg"), ("Platform size", platform),
             ("Lowest height", f"{low} mm"), ("Highest height", f"{_n(high)} mm"),
             ("Drive", "230 V / 50 Hz, 0.75 kW" if stem.startswith("Electric")
              else f"foot pump, {rng.randrange(12, 60)} strokes to full height")]
    facts = f"Platform {platform}, lifts {_n(capacity)} kg from {low} mm to {_n(high)} mm."
    return _Part(stem, size, specs, facts, material, rng.uniform(35, 260), rng.uniform(380, 3200))


def _handle(rng: random.Random) -> _Part:
    stem = rng.choice(["Bow handle", "Tubular handle", "Recessed handle", "Folding handle",
                       "Offset bow handle", "Cabinet handle"])
    centre = rng.choice([64, 96, 100, 117, 128, 160, 180, 200, 250, 300, 400])
    thread = rng.choice(["M5", "M6", "M8", "M10"])
    material = rng.choice(["aluminium AlMgSi0.5", "polyamide PA66, glass-fibre reinforced",
                           "stainless steel 1.4301", "zinc die-cast", "steel"])
    size = f"{centre} mm" if rng.random() < 0.6 else f"{centre} mm, {thread}"
    specs = [("Centre distance", f"{centre} mm"),
             ("Grip height", f"{rng.choice([28, 32, 35, 40, 48, 60])} mm"),
             ("Grip diameter", f"{rng.choice([8, 10, 12, 16, 20, 26])} mm"),
             ("Fastening", rng.choice([f"female thread {thread}", f"through hole for {thread}"]))]
    facts = f"Centre distance {centre} mm, fastened from behind with {thread} screws."
    return _Part(stem, size, specs, facts, material, centre * 0.0009, rng.uniform(2, 45))


def _foot(rng: random.Random) -> _Part:
    stem = rng.choice(["Levelling foot", "Swivel levelling foot", "Hygienic levelling foot",
                       "Heavy-duty levelling foot", "Levelling foot with floor fixing"])
    diameter = rng.choice([8, 10, 12, 16, 20, 24])
    length = rng.choice([40, 50, 60, 80, 100, 125, 150, 200])
    base = rng.choice([30, 40, 50, 60, 80, 100, 120])
    load = round(diameter * diameter * rng.uniform(0.05, 0.25), 1)
    material = rng.choice(["steel", "stainless steel 1.4301", "stainless steel 1.4404",
                           "polyamide PA66, glass-fibre reinforced"])
    size = f"M{diameter} x {length}"
    specs = [("Thread", f"M{diameter}"), ("Thread length", f"{length} mm"),
             ("Base diameter", f"{base} mm"),
             ("Swivel angle", "±15°" if "Swivel" in stem or "Hygienic" in stem else "fixed"),
             ("Static load", f"{load} kN"),
             ("Base pad", rng.choice(["NBR, non-slip", "TPE, grey", "without pad"]))]
    facts = f"Thread M{diameter} x {length} mm on a {base} mm base, static load {load} kN."
    return _Part(stem, size, specs, facts, material, base * length * 0.00004, rng.uniform(3, 55))


def _gas_spring(rng: random.Random) -> _Part:
    stem = rng.choice(["Gas spring", "Lockable gas spring", "Gas traction spring",
                       "Gas spring with end damping"])
    force = rng.choice([50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200])
    stroke = rng.choice([40, 60, 80, 100, 120, 150, 200, 250, 300])
    extended = stroke * 2 + rng.choice([40, 55, 70])
    material = rng.choice(["steel", "steel", "stainless steel 1.4404"])
    size = f"{_n(force)} N, stroke {stroke} mm"
    fitting = rng.choice(["M8 thread both ends", "eyelet 8.2 mm both ends",
                          "angle joint, ball socket 13 mm", "M6 thread both ends"])
    specs = [("Extension force F1", f"{_n(force)} N"), ("Stroke", f"{stroke} mm"),
             ("Extended length", f"{extended} mm"),
             ("Cylinder / rod diameter", rng.choice(["15 / 6 mm", "18 / 8 mm", "22 / 10 mm",
                                                     "28 / 14 mm"])),
             ("End fittings", fitting), ("Operating temperature", "-30 °C to +80 °C")]
    facts = f"Extension force {_n(force)} N over a stroke of {stroke} mm, {fitting}."
    return _Part(stem, size, specs, facts, material, extended * 0.0011, rng.uniform(9, 80))


# Metric cable gland threads with their clamping ranges and widths across flats.
_GLANDS = [("M12 x 1.5", "3 - 6.5 mm", 15), ("M16 x 1.5", "4.5 - 10 mm", 20),
           ("M20 x 1.5", "6 - 12 mm", 24), ("M25 x 1.5", "13 - 18 mm", 29),
           ("M32 x 1.5", "15 - 21 mm", 36), ("M40 x 1.5", "19 - 28 mm", 46),
           ("M50 x 1.5", "27 - 35 mm", 57), ("M63 x 1.5", "34 - 45 mm", 68)]


def _gland(rng: random.Random) -> _Part:
    stem = rng.choice(["Cable gland", "EMC cable gland", "Cable gland with strain relief",
                       "Blanking plug"])
    thread, clamp, flats = rng.choice(_GLANDS)
    material = ("brass" if stem.startswith("EMC")
                else rng.choice(["polyamide PA6", "polyamide PA6", "brass",
                                 "stainless steel 1.4404"]))
    ip = rng.choice(["IP68", "IP66 / IP68", "IP69K"])
    size = f"{thread}, {ip}"
    specs = [("Thread", thread), ("Width across flats", f"{flats} mm"), ("Protection class", ip),
             ("Seal", rng.choice(["TPE", "CR (neoprene)", "silicone"])),
             ("Temperature range", rng.choice(["-20 °C to +100 °C", "-40 °C to +130 °C"]))]
    if stem != "Blanking plug":
        specs.insert(1, ("Clamping range", clamp))
        facts = f"Thread {thread} for cables from {clamp}, sealed to {ip}."
    else:
        facts = f"Closes unused {thread} entries, sealed to {ip}."
    return _Part(stem, size, specs, facts, material, flats * 0.0015, rng.uniform(0.4, 14))


def _fastener(rng: random.Random) -> _Part:
    stem = rng.choice(["Socket head cap screw", "Hexagon head bolt", "Countersunk screw",
                       "Threaded rod", "Wing screw", "Shoulder screw"])
    diameter = rng.choice([3, 4, 5, 6, 8, 10, 12, 16, 20])
    length = 1000 if stem == "Threaded rod" else rng.choice([6, 8, 10, 12, 16, 20, 25, 30, 40,
                                                             50, 60, 80, 100])
    stainless = rng.random() < 0.35
    material = "stainless steel 1.4301" if stainless else "steel"
    grade = rng.choice(["A2-70", "A4-80"]) if stainless else rng.choice(["8.8", "10.9", "12.9"])
    pack = rng.choice([1, 10, 25, 50, 100, 200]) if stem != "Threaded rod" else 1
    size = f"M{diameter} x {length}"
    specs = [("Thread", f"M{diameter}"), ("Length", f"{_n(length)} mm"),
             ("Strength class", grade), ("Pack size", f"{pack} pcs")]
    facts = f"Thread M{diameter}, length {_n(length)} mm, strength class {grade}, pack of {pack}."
    weight = diameter * diameter * length * 0.0000062 * pack
    return _Part(stem, size, specs, facts, material, weight,
                 rng.uniform(0.5, 40))


def _knob(rng: random.Random) -> _Part:
    stem = rng.choice(["Star knob", "Clamping lever", "Wing knob", "Ball knob", "Cam lever",
                       "Indexing plunger"])
    diameter = rng.choice([5, 6, 8, 10, 12, 16])
    head = rng.choice([25, 32, 40, 50, 63, 80])
    male = rng.random() < 0.5
    length = rng.choice([15, 20, 25, 30, 40, 50]) if male else 0
    material = rng.choice(["polyamide PA66, glass-fibre reinforced", "zinc die-cast",
                           "stainless steel 1.4301", "POM"])
    thread = f"M{diameter} x {length}" if male else f"M{diameter}"
    size = f"{thread}, {head} mm"
    specs = [("Thread", f"{'external' if male else 'internal'} thread {thread}"),
             ("Head diameter", f"{head} mm"),
             ("Insert", rng.choice(["steel, bright zinc-plated", "stainless steel 1.4301"])),
             ("Max. tightening torque", f"{rng.choice([4, 6, 10, 15, 25])} Nm")]
    facts = f"Head {head} mm with {'stud' if male else 'bushing'} {thread}."
    return _Part(stem, size, specs, facts, material, head * 0.0012, rng.uniform(1.5, 25))


def _lock(rng: random.Random) -> _Part:
    stem = rng.choice(["Quarter-turn lock", "Compression latch", "Cam lock", "Swing handle",
                       "Draw latch", "Slam latch"])
    actuation = rng.choice(["square 7 mm", "triangle 8 mm", "double-bit 3 mm", "slot",
                            "wing knob", "key, differing"])
    material = rng.choice(["zinc die-cast", "stainless steel 1.4301", "stainless steel 1.4404",
                           "polyamide PA66, glass-fibre reinforced"])
    if stem == "Draw latch":
        length = rng.choice([65, 95, 115, 150, 190])
        force = rng.choice([500, 900, 1500, 2500, 4000])
        size = f"{length} mm, {_n(force)} N"
        specs = [("Length", f"{length} mm"), ("Holding force", f"{_n(force)} N"),
                 ("Fastening", "screw-on, 4 holes")]
        facts = f"Draw latch {length} mm long with {_n(force)} N holding force."
    else:
        grip = rng.choice(["1 - 3 mm", "2 - 5 mm", "3 - 8 mm", "10 - 20 mm"])
        size = actuation if rng.random() < 0.5 else f"{actuation}, grip {grip}"
        specs = [("Actuation", actuation), ("Grip range", grip),
                 ("Cut-out", rng.choice(["22 x 22 mm", "Ø 19.5 mm", "Ø 22 mm", "33 x 33 mm"])),
                 ("Protection class", rng.choice(["IP54", "IP65", "IP66"]))]
        facts = f"For panel thicknesses of {grip}, operated by {actuation}."
    return _Part(stem, size, specs, facts, material, rng.uniform(0.04, 0.6), rng.uniform(4, 60))


def _roller(rng: random.Random) -> _Part:
    stem = rng.choice(["Gravity conveyor roller", "Ball transfer unit", "Skate wheel",
                       "Drive roller with sprocket"])
    material = rng.choice(["steel", "stainless steel 1.4301", "polypropylene", "aluminium"])
    if stem == "Ball transfer unit":
        ball = rng.choice([12.7, 15.9, 25.4, 30.0, 38.1, 50.8])
        load = int(ball * rng.uniform(1, 8))
        size = f"ball {ball} mm, {load} kg"
        specs = [("Ball diameter", f"{ball} mm"), ("Load capacity", f"{load} kg"),
                 ("Mounting", rng.choice(["flange, 3 holes", "threaded stud M8", "press-in"]))]
        facts = f"Ball diameter {ball} mm, carries {load} kg in any direction."
        weight = ball * 0.01
    else:
        tube = rng.choice([20, 30, 40, 50, 60, 80, 89])
        length = rng.randrange(100, 1300, 50)
        load = int(tube * rng.uniform(1, 4))
        size = f"{tube} x {length} mm"
        specs = [("Tube diameter", f"{tube} mm"), ("Reference length", f"{_n(length)} mm"),
                 ("Axle", rng.choice(["spring-loaded, hexagon 11 mm", "female thread M8",
                                      "round 12 mm, spring-loaded"])),
                 ("Load capacity", f"{load} kg"),
                 ("Bearing", rng.choice(["precision ball bearing 6002", "plastic bearing"]))]
        facts = f"Tube {tube} mm, length {_n(length)} mm, load capacity {load} kg."
        weight = tube * length * 0.00002
    return _Part(stem, size, specs, facts, material, weight, rng.uniform(3, 70))


# (category, generator, relative weight, sentences about use)
_CATEGORY_TABLE: list[tuple[Category, Callable[[random.Random], _Part], float, list[str]]] = [
    (Category("hinges", "HG", "Hinges",
              "Hinges for doors, flaps and covers on machine frames and enclosures."),
     _hinge, 1.2,
     ["For doors, flaps and covers on machine frames and enclosures.",
      "Suitable for panels on cabinets, guards and protective housings.",
      "Screw-on design for profile systems and sheet metal."]),
    (Category("bearings", "BR", "Bearings",
              "Ball, needle and housed bearing units for shafts in machines and conveyors."),
     _bearing, 1.0,
     ["Supports rotating shafts in machines, conveyors and drives.",
      "Ready to fit and greased for life.",
      "For radial loads and moderate axial loads in both directions."]),
    (Category("linear-guides", "LG", "Linear guides",
              "Profile rail guides, carriages and telescopic slides for precise linear motion."),
     _linear, 0.9,
     ["Guides loads along a straight line with low friction.",
      "For handling systems, automation modules and machine tools.",
      "Rails can be cut to length on request."]),
    (Category("toggle-clamps", "TC", "Toggle clamps",
              "Toggle clamps for fixtures, welding jigs and assembly stations."),
     _toggle, 1.1,
     ["Holds workpieces quickly and securely in fixtures and welding jigs.",
      "Self-locking over the dead centre, released by hand.",
      "For assembly stations and test benches."]),
    (Category("castors", "CS", "Castors and wheels",
              "Swivel and fixed castors for trolleys, racks and transport equipment."),
     _castor, 1.2,
     ["Runs quietly on smooth floors and protects sensitive surfaces.",
      "For trolleys, racks and transport equipment.",
      "Suitable for workshops, warehouses and clean rooms."]),
    (Category("pallet-trucks", "PT", "Pallet trucks",
              "Hand pallet trucks for moving pallets in warehouses and on loading docks."),
     _pallet_truck, 0.5,
     ["Moves Euro pallets and industrial pallets in warehouses and on loading docks.",
      "Robust hydraulic pump with overload valve.",
      "Ergonomic drawbar with three-position control."]),
    (Category("scissor-lifts", "SL", "Scissor lift tables",
              "Scissor lift tables for ergonomic work at the right height."),
     _scissor, 0.5,
     ["Brings loads to an ergonomic working height.",
      "Safety valve and hose-rupture protection fitted as standard.",
      "Platform with anti-slip surface."]),
    (Category("handles", "HD", "Handles",
              "Bow, tubular and recessed handles for machines, doors and equipment."),
     _handle, 1.1,
     ["Gives a firm grip on machine doors, drawers and equipment.",
      "Mounted from the rear so no screws are visible.",
      "Rounded edges for comfortable handling."]),
    (Category("levelling-feet", "LF", "Levelling feet",
              "Levelling feet to stand machines and frames firmly on uneven floors."),
     _foot, 1.1,
     ["Levels machines, frames and workbenches on uneven floors.",
      "Base pad damps vibration and protects the floor.",
      "Height adjusted with a spanner on the hexagon."]),
    (Category("gas-springs", "GS", "Gas springs",
              "Gas springs for lids, flaps and hoods that open and close smoothly."),
     _gas_spring, 1.0,
     ["Lifts and holds lids, flaps and hoods smoothly.",
      "Maintenance-free and ready to install.",
      "Mount with the rod facing down for built-in end damping."]),
    (Category("cable-glands", "CG", "Cable glands",
              "Cable glands and blanking plugs for sealed cable entries."),
     _gland, 1.0,
     ["Seals cable entries into enclosures and junction boxes.",
      "Integrated strain relief holds the cable in place.",
      "Supplied with a locknut and an O-ring."]),
    (Category("screws-bolts", "FS", "Screws and bolts",
              "Screws, bolts and threaded rods in common metric sizes."),
     _fastener, 1.0,
     ["Standard fastener for machine building and steel construction.",
      "Metric ISO thread, ready to use.",
      "Stocked in common lengths for fast delivery."]),
    (Category("knobs-levers", "KL", "Knobs and clamping levers",
              "Star knobs, clamping levers and indexing plungers for tool-free adjustment."),
     _knob, 1.0,
     ["Allows quick adjustment without tools.",
      "Ergonomic shape for a secure hold, also with gloves.",
      "For jigs, guards and adjustable stops."]),
    (Category("locks-latches", "LL", "Locks and latches",
              "Quarter-turn locks, compression latches and draw latches for enclosures."),
     _lock, 0.9,
     ["Keeps doors of cabinets and enclosures closed securely.",
      "Pulls the door tight against the seal.",
      "Easy to mount in a simple panel cut-out."]),
    (Category("conveyor-rollers", "CR", "Conveyor rollers",
              "Gravity rollers, skate wheels and ball transfer units for conveyor lines."),
     _roller, 0.8,
     ["For gravity and powered roller conveyors.",
      "Low rolling resistance thanks to precision bearings.",
      "Easy to replace in existing conveyor frames."]),
]

CATEGORIES: list[Category] = [row[0] for row in _CATEGORY_TABLE]

_TRADENAME_SENTENCES = [
    "Part of the {tn} range.",
    "{tn} quality, tested for {cycles} load cycles.",
    "All {tn} parts come with a {years}-year warranty.",
    "{tn} parts are made in Europe.",
]

# Image sizes: square, landscape and portrait shapes between 250 x 250 and 2000 x 1500.
_SIZES = [(250, 250), (400, 400), (500, 500), (600, 600), (800, 800), (1000, 1000),
          (1200, 1200), (1500, 1500),
          (640, 480), (800, 600), (1024, 768), (1200, 900), (1280, 720), (1500, 1000),
          (1600, 1200), (1920, 1080), (2000, 1500),
          (480, 640), (600, 800), (750, 1000), (900, 1200), (1000, 1500)]
# PNGs stay at or below 1200 px: shops use them for small cut-outs, and it keeps encoding fast.
_PNG_SIZES = [s for s in _SIZES if max(s) <= 1200]
LARGEST_SIZE = (2000, 1500)


def _slugify(text: str) -> str:
    text = text.lower().replace("ø", "o").replace("°", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _image(rng: random.Random, sku: str, index: int, fmt: str) -> Image:
    if fmt == "PNG":
        w, h = rng.choice(_PNG_SIZES)
        return Image(f"{sku.lower()}-{index}.png", "PNG", w, h, rng.getrandbits(32),
                     alpha=rng.random() < 0.5)
    w, h = rng.choice(_SIZES)
    ext = "jpeg" if rng.random() < 0.06 else "jpg"  # some shops use the long ending
    return Image(f"{sku.lower()}-{index}.{ext}", "JPEG", w, h, rng.getrandbits(32))


def _gallery(rng: random.Random, sku: str) -> list[Image]:
    if rng.random() < 0.10:
        # A cut-out PNG first, then a photo: the crawler takes the first allowed ending.
        formats = ["PNG", "JPEG"] + (["JPEG"] if rng.random() < 0.4 else [])
    else:
        count = rng.choices([1, 2, 3], weights=[35, 40, 25])[0]
        formats = ["JPEG"] + [("PNG" if rng.random() < 0.2 else "JPEG") for _ in range(count - 1)]
    return [_image(rng, sku, i + 1, fmt) for i, fmt in enumerate(formats)]


def _name(rng: random.Random, part: _Part, tradename: str | None) -> str:
    if tradename is None:
        if rng.random() < 0.3:
            return f"{part.stem}, {part.material.split(',')[0]}, {part.size}"
        return f"{part.stem} {part.size}"
    if rng.random() < 0.75:
        return f"{tradename} {part.stem} {part.size}"
    return f"{part.stem} {tradename} {part.size}"


def _description(rng: random.Random, part: _Part, uses: list[str], tradename: str | None) -> str:
    sentences = [rng.choice(uses)]
    if rng.random() < 0.8:
        sentences.append(part.facts)
    if tradename and rng.random() < 0.5:
        sentences.append(rng.choice(_TRADENAME_SENTENCES).format(
            tn=tradename, cycles=f"{rng.choice([10, 20, 50, 100]) * 1000:,}",
            years=rng.choice([2, 3, 5])))
    return " ".join(sentences[:3])


def _digit_name(rng: random.Random, sku: str) -> str:
    """A name that is only an article number, as some shops show for spare parts."""
    style = rng.randrange(3)
    if style == 0:
        return f"{rng.randrange(1000, 9999)} {rng.randrange(1000, 9999):04d}"
    if style == 1:
        return f"{sku[3:]} {rng.randrange(10, 999)}"
    return f"{rng.randrange(100, 999)} {rng.randrange(100, 999)} {rng.randrange(10, 99)}"


def build_catalogue(n_products: int = 320, seed: int = 7) -> Catalogue:
    """Build the demo catalogue; pure and deterministic in (n_products, seed)."""
    if n_products < 1:
        raise ValueError("n_products must be at least 1")
    rng = random.Random(seed)
    weights = [row[2] for row in _CATEGORY_TABLE]
    numbers = rng.sample(range(10000, 100000), n_products)  # unique SKU numbers
    first_day = date(2024, 1, 8)

    products: list[Product] = []
    for number in numbers:
        category, make, _, uses = rng.choices(_CATEGORY_TABLE, weights=weights)[0]
        part = make(rng)
        finish = rng.choice(FINISHES[part.material])
        tradename = rng.choice(TRADENAMES) if rng.random() < 0.65 else None
        sku = f"{category.code}-{number}"
        name = _name(rng, part, tradename)
        specs = [("Article no.", sku), ("Material", part.material), ("Finish", finish),
                 *part.specs, ("Weight", _kg(part.weight_kg))]
        if tradename:
            specs.append(("Brand", tradename))
        products.append(Product(
            sku=sku, slug="", category=category.slug, name=name,
            description=_description(rng, part, uses, tradename), specs=specs,
            images=_gallery(rng, sku), tradename=tradename, price=round(part.price, 2),
            lastmod=(first_day + timedelta(days=rng.randrange(600))).isoformat(),
            kind=part.kind or part.stem, material=part.material, finish=finish))

    # Pick the awkward cases from disjoint sets of products, in exact numbers, so that even
    # a small catalogue has at least one of each.
    order = list(range(n_products))
    rng.shuffle(order)
    n_none = max(1, round(n_products * 0.03)) if n_products >= 10 else 0
    n_digits = max(1, round(n_products * 0.0125)) if n_products >= 10 else 0
    n_pairs = max(1, n_products // 64) if n_products >= 10 else 0
    no_image = order[:n_none]
    digit_only = order[n_none:n_none + n_digits]
    pool = order[n_none + n_digits:]

    for i in no_image:
        products[i].images = [PLACEHOLDER]
    for i in digit_only:
        products[i].name = _digit_name(rng, products[i].sku)

    # Cross-listed variants: the second product of a pair shows the first one's main photo,
    # preferably within the same category, as shops do for near-identical variants.
    used: set[int] = set()
    for a in pool:
        if n_pairs == 0:
            break
        if a in used:
            continue
        mates = [b for b in pool if b != a and b not in used
                 and products[b].category == products[a].category]
        mates = mates or [b for b in pool if b != a and b not in used]
        if not mates:
            break
        b = mates[0]
        used.update((a, b))
        products[b].images = [products[a].images[0], *products[b].images[1:]]
        n_pairs -= 1

    # Make sure the largest size is present, so tests and benchmarks can rely on it.
    if not any((img.width, img.height) == LARGEST_SIZE for p in products for img in p.images):
        p = next((p for p in products if p.images[0].format == "JPEG"
                  and sum(q.images[0] is p.images[0] for q in products) == 1), None)
        if p is not None:
            old = p.images[0]
            p.images[0] = Image(old.name, "JPEG", *LARGEST_SIZE, old.colour_seed)

    for p in products:
        p.slug = f"{_slugify(p.name)}-{p.sku.lower()}"  # SKU suffix keeps slugs unique
    return Catalogue(products=products, categories=list(CATEGORIES))
