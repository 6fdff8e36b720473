"""Product records for the labelling benchmark, from a catalogue that is not the demo shop's.

Written for this project (no shop's text): part kinds the demo catalogue does not have, or has
in another shape, and the mess real catalogues put on a page: long spec tables and one-liners,
German/English mixes with umlauts, HTML-entity leftovers (``&nbsp;``, ``&Oslash;``), unit soup,
marketing sentences, bullet characters, one text far longer than ``llm.max_input_chars``, and
two records the pre-filter drops (a label of digits only, data of empty strings only).

Each record is ``(label, data strings)`` as a shop's selectors would yield it, before the
pre-filter.
"""

from __future__ import annotations

# One supplier's catalogue page, flattened: a text far longer than llm.max_input_chars (1500),
# so the prompt is cut.
_LONG_VALVE_PAGE = [
    "Our 2/2-way solenoid valves for neutral gases and liquids are built for continuous duty in "
    "machine building, water treatment and process plants. The servo-assisted diaphragm design "
    "needs a minimum pressure difference of 0.5 bar to open, the direct-acting versions open "
    "from 0 bar and suit small flows, vacuum and gravity feed.",
    "Body made of dezincification-resistant brass (CW602N), seals of NBR as standard, FKM for "
    "oils and hot water up to 90 °C, EPDM for drinking water with approvals on request. The coil "
    "can be turned through 360° on the armature tube and is held by one knurled nut, so it can be "
    "changed without opening the medium circuit.",
    "• Connection G 1/8 to G 2 (BSPP, ISO 228-1)",
    "• Nominal width DN 1.5 to DN 50",
    "• Operating pressure 0 to 16 bar (servo: 0.5 to 16 bar)",
    "• Medium temperature -10 to +90 °C, ambient -10 to +50 °C",
    "• Coil voltages 24 V DC, 24 V AC, 110 V AC, 230 V AC 50/60 Hz",
    "• Power consumption 8 W (DC), holding 9 VA (AC)",
    "• Duty cycle 100 % ED",
    "• Protection class IP65 with the connector fitted (EN 175301-803 form A)",
    "• Response time opening 15-40 ms, closing 30-80 ms depending on size",
    "• Manual override: optional, screw type",
    "Normally closed (NC) is the standard function; normally open (NO) is available in the same "
    "body sizes. Installation in any position, preferably with the coil upright. Fit a strainer "
    "of at most 0.2 mm mesh upstream: dirt in the pilot bore is the most frequent cause of a valve "
    "that does not close. Flush new pipework before the valve is installed.",
    "Spare parts: coil, diaphragm kit, armature tube with core, connector with LED and varistor. "
    "For media with particles, viscous media above 21 mm²/s or steam, ask for our piston valves "
    "and angle seat valves. Delivery within 48 hours for stock types, special voltages within "
    "three weeks. All valves are pressure tested and each carries a batch number on the body.",
    "Technical data sheet, dimension drawing and CAD model (STEP, IGES) can be downloaded after "
    "registration. Prices are per piece, excluding VAT, for quantities of 1 to 9; quantity "
    "discounts from 10 pieces are shown in the basket.",
]

RECORDS: list[tuple[str, list[str]]] = [
    ("Pneumatic cylinder ISO 15552, double acting, Ø 50 mm, stroke 100 mm", [
        "Double-acting standard cylinder to ISO 15552 with adjustable pneumatic cushioning at both "
        "ends and a magnetic piston for position sensing.",
        "Bore", "50 mm", "Stroke", "100 mm", "Piston rod thread", "M16x1,5",
        "Port size", "G 1/4", "Operating pressure", "1 - 10 bar",
        "Tube", "anodised aluminium profile", "Piston rod", "stainless steel 1.4305",
        "Seals", "PU / NBR", "Temperature range", "-20 ... +80 °C",
    ]),
    ("Kompaktzylinder doppeltwirkend &Oslash;&nbsp;32 Hub 25", [
        "Kompaktzylinder nach ISO 21287, sehr kurze Bauform für enge Einbauräume.",
        "Kolben-&Oslash;", "32 mm", "Hub", "25 mm", "Anschluss", "M5",
        "Betriebsdruck", "0,6&nbsp;&ndash;&nbsp;10 bar", "Werkstoff Gehäuse", "Aluminium eloxiert",
        "Kolbenstange", "Stahl verchromt", "Dämpfung", "elastisch, beidseitig",
    ]),
    ("Magnetventil 2/2-Wege G 1/2, 230 V, NC", _LONG_VALVE_PAGE),
    ("Hexagon head screw DIN 933 M8x25 8.8 zinc plated", [
        "M8x1,25 / 8.8 / DIN 933 / ISO 4017 / galv. verzinkt / VPE 200 Stk.",
    ]),
    ("Sechskantmutter DIN 934 M10 A2", [
        "Sechskantmuttern aus Edelstahl A2 (1.4301), Gewinde M10, Schlüsselweite 17 mm, "
        "Festigkeitsklasse A2-70.",
        "Inhalt: 100 Stück",
    ]),
    ("Washer ISO 7089 / DIN 125-A, 10.5 mm", [
        "Flat washer without chamfer for M10 screws.",
        "d1 10,5 mm | d2 20 mm | s 2 mm", "Material: steel, hardness 200 HV",
        "Finish: zinc flake coated, silver",
    ]),
    ("Retaining ring DIN 471 for shafts 20 mm", [
        "External circlip for shafts, spring steel, phosphated and oiled.",
        "Shaft diameter", "20 mm", "Groove diameter", "19 mm", "Thickness", "1,2 mm",
        "Assembly with circlip pliers (A-type).",
    ]),
    ("Dowel pin ISO 8734 6 m6 x 30", [
        "Hardened parallel pin, tolerance m6, ground, for precise location of machine parts.",
        "Material", "1.3505 (100Cr6)", "Hardness", "60 ± 2 HRC", "Surface", "bright",
    ]),
    ("Spring plunger with slot, M10, steel, standard spring force", [
        "Threaded spring plunger for positioning and ejecting workpieces.",
        "Thread: M10", "Length: 22 mm", "Ball / pin stroke: 2.5 mm",
        "Initial spring force: 18 N", "End spring force: 43 N",
        "Body: free-cutting steel, case hardened, blackened", "Pin: hardened steel",
    ]),
    ("Indexing plunger with rest position, M16x1.5", [
        "Pull the knob and turn it by 90°: the plunger stays retracted in the rest position. "
        "Turn back and it snaps into the bore again.",
        "Thread", "M16x1,5", "Pin diameter", "8 mm", "Knob", "plastic, black, matt",
        "Body and pin", "steel, zinc plated, blue passivated", "Lock nut included",
    ]),
    ("Arretierbolzen mit Pilzgriff", [
        "Edelstahl rostfrei 1.4305 · Griff Polyamid schwarz · Rastposition durch Drehen um 180°",
    ]),
    ("Jaw coupling with spider, bore 14/19 mm", [
        "Backlash-free three-part elastic coupling: two aluminium hubs and a polyurethane spider "
        "(98 Shore A) damp shocks and compensate misalignment.",
        "Nominal torque", "17 Nm", "Max. speed", "19,000 rpm",
        "Bores", "14H7 / 19H7 with clamping hub", "Angular misalignment", "0.9°",
        "Radial misalignment", "0.1 mm",
    ]),
    ("Metal bellows coupling BK2 – torsionally stiff", [
        "For servo motors, ball screw drives and encoders where every arc second counts.",
        "► Bellows: stainless steel, 4 convolutions",
        "► Hubs: high-strength aluminium, clamping screws ISO 4762",
        "► Temperature: –30 °C to +120 °C",
        "► Backlash-free, maintenance-free, wear-free",
    ]),
    ("Shaft collar with clamping screw 25 mm", [
        "Split shaft collar, one-piece, does not mark the shaft.",
        "Bore 25 mm, outer Ø 45 mm, width 15 mm, screw DIN 912 M6",
        "Steel, black oxide",
    ]),
    ("Worm-drive hose clip W4 12–22 mm", [
        "Schlauchschelle nach DIN 3017, Bandbreite 9 mm, Spannbereich 12–22 mm, "
        "komplett aus Edelstahl (W4) für Wasser, Öl und Druckluft.",
        "Hose clamp to DIN 3017, band 9 mm, clamping range 12-22 mm, all parts stainless steel.",
    ]),
    ("Ear clamp single-ear, 17.8 mm", [
        "Single-ear clamp for thin-walled hoses in fuel and cooling lines; closed with pincers.",
        "Material: stainless steel 1.4301", "Band: 7 x 0,6 mm", "Size range: 15,3 - 17,8 mm",
    ]),
    ("Sight glass G 3/4, round, with reflector", [
        "Oil level sight glass for gearboxes and hydraulic tanks. Screw it in like a plug: the "
        "prism reflector makes the oil level easy to read even in poor light.",
        "Thread", "G 3/4", "Body", "aluminium, natural", "Glass", "borosilicate",
        "Seal", "NBR O-ring", "Max. temperature", "100 °C",
    ]),
    ("Ölstandsauge / oil level indicator", [
        "Polyamid-Gehäuse, Schauglas transparent, Dichtung NBR &amp; Rückwand weiß",
        "for coolant and oil tanks &#8211; not for fuel",
    ]),
    ("Cable chain, plastic, inner width 50 mm, bending radius 75 mm", [
        "Energy chain that guides cables and hoses safely on moving machine axes.",
        "Inner height: 26 mm", "Inner width: 50 mm", "Pitch: 36 mm",
        "Opening: outer radius, crossbars every link", "Material: glass-fibre reinforced polyamide",
        "Colour: black", "Self-supporting length up to 1.9 m",
    ]),
    ("Energieführungskette geschlossen, Serie B15", [
        "Vollständig geschlossene Kette schützt Leitungen vor Spänen und heißen Partikeln.",
        "Innenhöhe&nbsp;15&nbsp;mm", "Innenbreite&nbsp;30&nbsp;mm", "Biegeradius 48 mm",
        "Material: Polyamid, schwarz", "Deckel zum Öffnen mit Schraubendreher",
    ]),
    ("Grease nipple DIN 71412 H1 M8x1", [
        "Hydraulic grease nipple, head type H1 (straight), steel zinc plated.",
    ]),
    ("O-ring 20 x 2 mm NBR 70 Shore A", [
        "O-Ring nach ISO 3601, Werkstoff NBR 70, Farbe schwarz, Temperaturbereich -30 bis +100 °C",
        "Packaging unit: 50 pieces",
    ]),
    ("Timing belt HTD 5M, width 15 mm, length 450 mm", [
        "Polyurethane timing belt with steel cords for precise, slip-free power transmission.",
        "Profile", "HTD 5M", "Pitch", "5 mm", "Teeth", "90", "Width", "15 mm",
        "Tension member", "steel", "Colour", "white",
    ]),
    ("Plate sprocket for roller chain 08B-1, 19 teeth", [
        "Sprocket without hub, for welding or bolting on.",
        "Chain 1/2\" x 5/16\", material C45, teeth not hardened",
    ]),
    ("Vibration mount type A, M8, 40 Shore A", [
        "Rubber-metal buffer for fans, pumps, compressors and control cabinets.",
        "Ø 30 mm × 20 mm, male thread both sides",
        "Rubber: natural rubber (NR), metal parts steel zinc plated",
        "Max. load 55 kg (compression)",
    ]),
    ("3-way ball valve L-port, stainless steel, Rp 1/2", [
        "Investment-cast stainless steel body 1.4408, PTFE seats, ISO 5211 mounting pad for "
        "actuators.",
        "Pressure rating PN 63", "Temperature -20 to +180 °C", "Handle: lockable",
    ]),
    ("Pressure gauge Ø 63 mm, 0–10 bar, G 1/4 bottom", [
        "Bourdon tube pressure gauge, accuracy class 1.6, glycerine-filled case of stainless "
        "steel for pulsating pressures and vibration.",
        "Connection: brass, bottom entry", "Window: polycarbonate",
    ]),
    ("Quick coupling NW 7.2, plug with hose barb 9 mm", [
        "The one-hand coupling for compressed air workshops: push in, done.",
        "Nominal width 7.2 mm · hose barb 9 mm · hardened steel, zinc plated · max. 35 bar",
    ]),
    ("Gewindeeinsatz M6 für Holz", [
        "Einschraubmutter aus Zinkdruckguss mit Innensechskant, ideal für Möbel, Messebau und "
        "Vorrichtungen aus Holz oder Holzwerkstoffen.",
        "Außengewinde Holz, Innengewinde M6, Länge 13 mm",
    ]),
    ("Inductive proximity sensor M12, PNP NO, 4 mm", [
        "Flush-mounted sensor with a switching distance of 4 mm, stainless steel housing and "
        "M12 connector. Yellow LED shows the switching state.",
        "Supply voltage", "10-30 V DC", "Output", "PNP, normally open",
        "Switching frequency", "2 kHz", "Protection", "IP67",
    ]),
    ("Linear shaft support block SK16", [
        "Aluminium support that clamps a 16 mm linear shaft to the machine bed; "
        "mount from above with two screws.",
    ]),
    ("Toggle clamp, push-pull, stroke 32 mm", [
        "Horizontal push-pull action, holding force 2500 N.",
        "★ Forged and welded steel parts, zinc plated and passivated",
        "★ Spindle M8 with lock nut",
        "★ For welding jigs and assembly fixtures",
    ]),
    ("Leveling pad with anti-slip base", [
        "Machine pad for uneven floors. The polyurethane base does not slip on tiles or concrete "
        "and isolates vibration. Stainless ball joint, tilts 15° in every direction.",
        "Stud", "M12x100", "Base Ø", "80 mm", "Static load", "1500 kg",
    ]),
    ("DIN 6885 feather key A 8x7x40", [
        "Passfeder Form A rundstirnig, C45+C, blank",
    ]),
    ("Threaded rod DIN 976-1 M12 x 1000 mm, 4.8, hot-dip galvanised", [
        "Gewindestange, Länge 1 m, Feuerverzinkt (tZn)", "steel class 4.8",
    ]),
    ("Universal joint single DIN 808, bore 12 mm", [
        "Single joint with needle bearings for shaft angles up to 45°.",
        "Bore 12H7, outer diameter 25 mm, length 62 mm, keyway to DIN 6885",
        "Steel C45, hardened joint parts",
    ]),
    # The pre-filter drops these two, as it would on a real crawl.
    ("4711 0815", ["Ersatzteil / spare part", "Art.-Nr. 4711 0815"]),
    ("Hose clamp assortment box", ["", ""]),
]
