//! Shop vocabulary for the embedded embedder: groups of English, Malay,
//! Indonesian and chat-slang words and phrases that mean one thing to a
//! shop ("parcel", "penghantaran", "ongkir" and "delivery" all concern
//! delivery). The embedder gives every group one dimension of its own, so
//! a question and a passage that share a concept but no word still meet.
//! Words no group names are looked up by their Malay or Indonesian roots.
//!
//! The groups are general retail vocabulary written from the shop's point
//! of view; some were widened after seeing what `demo/kb-eval` missed, which
//! is why `demo/kb-eval-holdout` (written later, never used for tuning) is
//! the figure to trust. Changing a group changes the vectors: the test
//! `the_lexicon_is_pinned_to_the_embedder_version` fails until the
//! embedder's version is raised, so old and new vectors are never mixed.

/// (concept, comma-separated words and two-word phrases), all lower case.
const GROUPS: &[(&str, &str)] = &[
    (
        "delivery",
        "ship, ships, shipping, shipped, shipment, delivery, deliveries, deliver, delivered, \
         courier, couriers, postage, parcel, parcels, package, packages, dispatch, dispatched, \
         arrive, arrives, arrival, tracking, track, tracked, pengiriman, kirim, dikirim, \
         mengirim, hantar, dihantar, penghantaran, menghantar, poslaju, ongkir, sampai, tiba, \
         bungkusan, paket, resi, lacak, jejak, kurier, kurir, jnt, j&t, dhl, gdex, ninja van, \
         ninjavan, posman, postman, rider, despatch",
    ),
    (
        "duration",
        "how long, lama, berapa lama, days, hari, weeks, minggu, eta, when, bila, bilakah, kapan, \
         soon, fast, faster, quick, express, same day, next day, cepat, segera, working days, \
         business days",
    ),
    (
        "cost",
        "cost, costs, price, prices, fee, fees, charge, charges, charged, rate, rates, how much, \
         harga, caj, biaya, ongkos, berapa, rm, ringgit, free, percuma, gratis, murah, expensive, \
         mahal, discount, diskaun, diskon, threshold, minimum",
    ),
    (
        "return",
        "return, returns, returned, returning, send back, sent back, pulang, pulangan, \
         memulangkan, dipulangkan, kembalikan, mengembalikan, pengembalian, retur, hantar balik, \
         give back, change mind, tak jadi, unwanted",
    ),
    (
        "refund",
        "refund, refunds, refunded, money back, duit balik, bayaran balik, pemulangan wang, wang \
         balik, pengembalian dana, dana kembali, reimburse, credited, credit back, chargeback, \
         balik duit, uang kembali, duit",
    ),
    (
        "exchange",
        "exchange, exchanges, exchanged, swap, replace, replacement, tukar, menukar, penukaran, \
         ganti, menggantikan, tukar saiz, different size, another size, change size",
    ),
    (
        "size",
        "size, sizes, sizing, fit, fits, fitting, small, large, big, tight, loose, saiz, ukuran, \
         besar, kecil, ketat, longgar, measure, measurements, measurement, chest, waist, hip, \
         length, cm, inch, inches, xs, xl, xxl, muat, sempit, labuh",
    ),
    (
        "payment",
        "pay, paying, payment, payments, paid, card, cards, credit, debit, visa, mastercard, \
         amex, fpx, online banking, bank transfer, transfer, ewallet, e-wallet, wallet, grabpay, \
         tng, touchngo, boost, shopeepay, gopay, ovo, bayar, pembayaran, membayar, dibayar, kad, \
         kartu, cod, cash, tunai, installment, instalment, ansuran, cicilan, bnpl, atome, \
         checkout, stripe, duitnow, qr",
    ),
    (
        "cancel",
        "cancel, cancels, cancelled, canceled, cancellation, batal, batalkan, membatalkan, \
         dibatalkan, pembatalan, change order, edit order, amend, modify, ubah, mengubah, tukar \
         alamat, change address, wrong address, alamat salah",
    ),
    (
        "damage",
        "damaged, damage, broken, break, defect, defects, defective, faulty, cracked, crack, \
         torn, tear, rosak, rusak, pecah, retak, koyak, cacat, missing, hilang, wrong item, \
         salah, incomplete, tak cukup, kurang, dented, scratched, calar, patah, tercabut, \
         tertanggal, bocor, leak, leaking, leaked, spill, spilled, tumpah",
    ),
    (
        "warranty",
        "warranty, warranties, guarantee, guaranteed, waranti, jaminan, garansi, repair, repairs, \
         fix, baiki, membaiki, perbaiki, servis, service, lifetime, manufacturing",
    ),
    (
        "care",
        "wash, washing, washed, clean, cleaning, care, dry, drying, iron, ironing, basuh, \
         membasuh, cuci, mencuci, dicuci, jaga, penjagaan, rawat, perawatan, merawat, bleach, \
         laundry, dobi, stain, stains, kotor, noda, fade, fading, luntur, pudar, mould, mold, \
         kulat, jamur, polish, oil, storage, simpan",
    ),
    (
        "contact",
        "contact, phone, call, email, whatsapp, wa, reach, hubungi, menghubungi, telefon, \
         telepon, nombor, nomor, number, talk, human, agent, staff, customer service, cs, \
         support, khidmat pelanggan, emel, mail, person, orang, manusia, live chat",
    ),
    (
        "location",
        "address, alamat, location, lokasi, where, mana, di mana, showroom, studio, outlet, \
         visit, walk in, kedai fizikal, toko, pickup, pick up, self collect, ambil sendiri, \
         ambil, map, parking",
    ),
    (
        "hours",
        "opening hours, hours, open, opens, close, closed, closes, jam, buka, tutup, waktu, waktu \
         operasi, public holiday, cuti, libur, weekend, sunday, saturday, ahad, sabtu, minggu",
    ),
    (
        "account",
        "account, accounts, login, log in, sign in, signin, password, kata laluan, kata sandi, \
         akaun, akun, register, registration, sign up, signup, daftar, mendaftar, reset, forgot, \
         forgotten, lupa, profile, profil, masuk",
    ),
    (
        "privacy",
        "privacy, data, personal information, personal data, maklumat peribadi, data peribadi, \
         data pribadi, padam, hapus, pdpa, cookies, cookie, marketing, newsletter, unsubscribe, \
         spam, share my, tracking cookies, ads, advertising, iklan, third party, remember me, \
         forget me",
    ),
    (
        "gift",
        "gift, gifts, gifting, wrap, wrapping, wrapped, hadiah, bungkus, balut, kado, voucher, \
         vouchers, gift card, baucar, note, message card, kad ucapan, present, surprise",
    ),
    (
        "international",
        "overseas, international, abroad, singapore, sg, brunei, luar negara, luar negeri, \
         worldwide, customs, duty, duties, import, tax, taxes, cukai, pajak, bea, indonesia, \
         australia, uk, usa, country, countries, negara, london, england, america, us, japan, \
         china, hong kong, thailand, india, europe, germany, france, canada, korea, taiwan, \
         philippines, vietnam, dubai, jakarta, bangkok, oversea, outside malaysia",
    ),
    (
        "east_malaysia",
        "sabah, sarawak, labuan, kota kinabalu, kk, kuching, miri, sandakan, east malaysia, \
         borneo, sebelah sana",
    ),
    (
        "stock",
        "stock, stocks, restock, restocked, restocking, available, availability, sold out, habis, \
         stok, ada lagi, tersedia, ready stock, pre-order, preorder, pre order, tempah, tempahan \
         awal, pesan, notify me, waitlist",
    ),
    (
        "order",
        "order, orders, ordered, ordering, pesanan, tempahan, beli, membeli, purchase, purchased, \
         buy, bought, status, mana barang, brg, barang, invoice, receipt, resit",
    ),
    (
        "wholesale",
        "bulk, wholesale, corporate, company, companies, borong, pukal, grosir, quantity, \
         quantities, kuantiti, door gift, doorgift, event, events, wedding, kahwin, kenduri, \
         souvenir, cenderamata, custom, customise, customize, logo, b2b, reseller, dropship",
    ),
    (
        "loyalty",
        "points, point, loyalty, member, members, membership, rewards, reward, mata ganjaran, \
         poin, ahli, keahlian, tier, cashback, redeem, tebus",
    ),
    (
        "authentic",
        "handmade, hand made, handcrafted, original, authentic, genuine, real, asli, tulen, \
         buatan tangan, artisan, artisans, craftsman, craftsmen, maker, makers, pengrajin, \
         tukang, pengusaha, fake, palsu, imitation",
    ),
    (
        "sustainable",
        "eco, eco-friendly, sustainable, sustainability, environment, environmental, plastic, \
         plastik, packaging, recycle, recycled, recyclable, alam sekitar, lingkungan, kitar \
         semula, daur ulang, green, natural dye, pewarna asli, kotak, box, boxes, carton, kadbod",
    ),
    (
        "apparel",
        "baju, shirt, shirts, kemeja, blouse, dress, dresses, tee, tshirt, t-shirt, kurung, \
         kebaya, sarong, sarung, samping, songket, batik, kain, seluar, pants, trousers, jacket, \
         jaket, tudung, hijab, kaftan, cardigan, clothes, clothing, pakaian, raincoat, skirt, \
         skirts, melayu",
    ),
    (
        "footwear",
        "shoe, shoes, kasut, sepatu, sneakers, sneaker, kicks, boots, boot, sandal, sandals, \
         capal, selipar, slipper, slippers, slides, loafers, heels, heel, flats, manek, manik, \
         tapak, sole, insole, outsole, socks, stokin",
    ),
    (
        "bags",
        "bag, bags, beg, tas, backpack, luggage, suitcase, suitcases, koper, trolley, tote, \
         sling, wallet, dompet, purse, duffel, roda, wheel, wheels, zip, zipper, padlock, lock, \
         kunci, mengkuang",
    ),
    (
        "kitchen",
        "kitchen, dapur, wok, kuali, pan, pans, pot, periuk, kettle, cerek, knife, pisau, lesung, \
         mortar, pestle, chopping, board, papan, ceramic, ceramics, seramik, pinggan, plate, \
         plates, bowl, mangkuk, cup, cups, cawan, mug, mugs, steamer, kukusan, mould, acuan, \
         loyang, rice cooker, cast iron, rust, karat, berkarat, seasoning, enamel, utensils",
    ),
    (
        "coffee",
        "coffee, kopi, tea, teh, beans, biji, grind, ground, espresso, pour over, plunger, french \
         press, brew, brewing, stale, fresh, roast, roasted, sachet, uncang",
    ),
    (
        "beauty",
        "beauty, skincare, skin, kulit, sunblock, sunscreen, spf, lotion, cream, krim, serum, \
         soap, sabun, lipbalm, lip balm, balm, minyak, perfume, wangian, shampoo, syampu, expiry, \
         expired, luput, tarikh luput, allergy, alahan, halal, ingredients, bahan",
    ),
    (
        "electronics",
        "electronics, electronic, elektronik, phone, handphone, hp, iphone, ip, samsung, charger, \
         charging, cas, cable, kabel, powerbank, power bank, battery, bateri, earbuds, earphone, \
         earphones, earpiece, headphones, speaker, adapter, plug, usb, casing, case, cover, \
         screen, bluetooth, overheat, panas",
    ),
    (
        "sports",
        "sports, sport, sukan, outdoor, goggles, snorkel, snorkelling, swim, swimming, renang, \
         helmet, topi keledar, basikal, bicycle, bike, cycling, scooter, racket, raket, \
         badminton, hiking, camping, khemah, tent, yoga, gym, running, lari, jogging, fishing, \
         memancing",
    ),
    (
        "kids",
        "kids, kid, child, children, anak, budak, kanak, baby, bayi, toddler, toy, toys, mainan, \
         school, sekolah, age, umur, choking, lelaki, perempuan, boy, girl",
    ),
    (
        "remote",
        "langkawi, tioman, pangkor, redang, perhentian, island, islands, pulau, remote, \
         pedalaman, rural, kampung, interior, outskirts",
    ),
    (
        "promotion",
        "promo, promotion, promotions, code, codes, coupon, coupons, kod, diskaun, diskon, \
         discount, discounts, sale, sales, offer, offers, deal, deals, potongan, rebate, murah \
         sikit, flash sale",
    ),
    (
        "cart",
        "cart, basket, troli, keranjang, saved, wishlist, hold, reserve, reserved, simpan dulu",
    ),
];

/// Chat shorthand and common misspellings, expanded before anything else.
const SHORTHAND: &[(&str, &str)] = &[
    ("u", "you"),
    ("ur", "your"),
    ("pls", "please"),
    ("plz", "please"),
    ("thx", "thanks"),
    ("tq", "thanks"),
    ("ty", "thanks"),
    ("pw", "password"),
    ("pwd", "password"),
    ("passwd", "password"),
    ("acc", "account"),
    ("acct", "account"),
    ("addr", "address"),
    ("qty", "quantity"),
    ("msg", "message"),
    ("pic", "picture"),
    ("pics", "pictures"),
    ("info", "information"),
    ("amt", "amount"),
    ("deliv", "delivery"),
    ("tmr", "tomorrow"),
    ("tmrw", "tomorrow"),
    ("wk", "week"),
    ("wks", "weeks"),
    ("hrs", "hours"),
    ("hr", "hour"),
    ("mins", "minutes"),
    ("pcs", "pieces"),
    ("wanna", "want to"),
    ("gonna", "going to"),
    ("dunno", "do not know"),
    ("cant", "can not"),
    ("dont", "do not"),
    ("didnt", "did not"),
    ("wont", "will not"),
    ("isnt", "is not"),
    ("doesnt", "does not"),
    // Malay and Indonesian chat
    ("brg", "barang"),
    ("brng", "barang"),
    ("nk", "nak"),
    ("tk", "tak"),
    ("x", "tak"),
    ("dh", "dah"),
    ("sbb", "sebab"),
    ("utk", "untuk"),
    ("dgn", "dengan"),
    ("dng", "dengan"),
    ("yg", "yang"),
    ("blh", "boleh"),
    ("bleh", "boleh"),
    ("sy", "saya"),
    ("mcm", "macam"),
    ("camne", "macam mana"),
    ("cmne", "macam mana"),
    ("macamana", "macam mana"),
    ("bkn", "bukan"),
    ("dpt", "dapat"),
    ("lg", "lagi"),
    ("kt", "kat"),
    ("org", "orang"),
    ("bg", "bagi"),
    ("hrg", "harga"),
    ("bln", "bulan"),
    ("thn", "tahun"),
    ("sm", "sama"),
    ("gmn", "gimana"),
    ("gk", "tidak"),
    ("ga", "tidak"),
    ("nggak", "tidak"),
    ("udh", "sudah"),
    ("udah", "sudah"),
    ("sdh", "sudah"),
    ("blm", "belum"),
    ("krn", "karena"),
    ("tdk", "tidak"),
];

/// Words too common to mean anything on their own (English, Malay,
/// Indonesian and chat fillers).
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "so", "that", "the", "their", "them", "there", "this", "to", "was", "we", "what", "when",
    "where", "which", "who", "will", "with", "you", "your", "am", "any", "just", "please", "not",
    "got", "get", "would", "could", "should", "there", "here", "one", "all", "about", "ada",
    "adalah", "akan", "apa", "atau", "boleh", "dan", "dari", "dengan", "di", "ini", "itu", "ke",
    "kah", "saya", "untuk", "yang", "tak", "nak", "ya", "lah", "kan", "aku", "mau", "bisa", "kat",
    "dah", "sudah", "tidak", "pun", "je", "jer", "kalau", "kalo", "macam", "mana", "ah", "la",
    "lor", "leh", "hi", "hello", "thanks", "ok", "okay", "liao", "meh", "hor", "eh",
];

/// Whether a (lower-case) word is a function word.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// The lower-case words of a text, chat shorthand expanded.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = raw.to_lowercase();
        match SHORTHAND.iter().find(|(short, _)| *short == word) {
            Some((_, long)) => out.extend(long.split(' ').map(str::to_string)),
            None => out.push(word),
        }
    }
    out
}

/// How many concept groups there are.
pub fn concept_count() -> usize {
    GROUPS.len()
}

/// The concepts that `words` touch, by name (for the tests to read).
#[cfg(test)]
pub fn concepts(words: &[String]) -> Vec<&'static str> {
    concept_ids(words)
        .into_iter()
        .map(|i| GROUPS[i].0)
        .collect()
}

/// The concepts that `words` (lower case, in order) touch, each once per
/// matching word or two-word phrase, as positions among the groups
/// (`0..concept_count()`). A word no group names is looked up by its Malay
/// or Indonesian roots too ("dihantar" → "hantar").
pub fn concept_ids(words: &[String]) -> Vec<usize> {
    let table = table();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if let Some(concept) = table
            .get(word.as_str())
            .or_else(|| find_root(word, |root| table.get(root)))
        {
            out.push(*concept);
        }
        if let Some(next) = words.get(i + 1)
            && let Some(concept) = table.get(format!("{word} {next}").as_str())
        {
            out.push(*concept);
        }
    }
    out
}

/// Candidate roots of a Malay or Indonesian word: particles, suffixes and
/// prefixes taken off ("penghantarannya" → "penghantaran", "hantar"). Only
/// used to look a word up among the groups, so a wrong cut finds nothing.
#[cfg(test)]
pub fn roots(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    find_root(word, |root| {
        out.push(root.to_string());
        None::<()>
    });
    out
}

/// The first of `word`'s candidate roots (see `roots`) for which `found`
/// answers. Called for every word the groups do not name, so it allocates
/// only for the prefixes that restore a letter ("menulis" → "tulis").
fn find_root<T>(word: &str, mut found: impl FnMut(&str) -> Option<T>) -> Option<T> {
    const PARTICLES: [&str; 4] = ["nya", "lah", "kah", "pun"];
    const SUFFIXES: [&str; 3] = ["kan", "an", "i"];
    const PREFIXES: &[(&str, &str)] = &[
        ("memper", ""),
        ("diper", ""),
        ("meng", ""),
        ("meny", "s"),
        ("mem", "p"),
        ("mem", ""),
        ("men", "t"),
        ("men", ""),
        ("me", ""),
        ("peng", ""),
        ("peny", "s"),
        ("pem", "p"),
        ("pem", ""),
        ("pen", "t"),
        ("pen", ""),
        ("per", ""),
        ("pe", ""),
        ("ber", ""),
        ("be", ""),
        ("ter", ""),
        ("di", ""),
        ("ke", ""),
        ("se", ""),
    ];
    if word.len() < 5 || !word.is_ascii() {
        return None;
    }
    let bases = std::iter::once(word).chain(
        PARTICLES
            .iter()
            .filter_map(|p| word.strip_suffix(p))
            .filter(|b| b.len() >= 4),
    );
    let mut restored = String::new();
    for base in bases {
        let stems = std::iter::once(base).chain(
            SUFFIXES
                .iter()
                .filter_map(|s| base.strip_suffix(s))
                .filter(|b| b.len() >= 4),
        );
        for stem in stems {
            if stem != word
                && let Some(hit) = found(stem)
            {
                return Some(hit);
            }
            for (prefix, restore) in PREFIXES {
                let Some(rest) = stem.strip_prefix(prefix).filter(|r| r.len() >= 3) else {
                    continue;
                };
                let candidate = if restore.is_empty() {
                    rest
                } else {
                    restored.clear();
                    restored.push_str(restore);
                    restored.push_str(rest);
                    restored.as_str()
                };
                if candidate != word
                    && let Some(hit) = found(candidate)
                {
                    return Some(hit);
                }
            }
        }
    }
    None
}

fn entries(words: &'static str) -> impl Iterator<Item = &'static str> {
    words.split(',').map(str::trim).filter(|w| !w.is_empty())
}

fn table() -> &'static std::collections::HashMap<&'static str, usize> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<&'static str, usize>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = std::collections::HashMap::new();
        for (concept, (_, words)) in GROUPS.iter().enumerate() {
            for word in entries(words) {
                // The first group that names a word keeps it.
                table.entry(word).or_insert(concept);
            }
        }
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_lowercase).collect()
    }

    #[test]
    fn words_and_phrases_in_three_languages_meet_in_one_concept() {
        assert_eq!(concepts(&words("my parcel")), vec!["delivery"]);
        assert_eq!(
            concepts(&words("penghantaran ke sabah")),
            vec!["delivery", "east_malaysia"]
        );
        assert_eq!(concepts(&words("ongkir")), vec!["delivery"]);
        assert_eq!(concepts(&words("I want my money back")), vec!["refund"]);
        assert!(concepts(&words("the weather is nice")).is_empty());
    }

    #[test]
    fn shorthand_is_expanded() {
        assert_eq!(
            super::words("cant login, pw salah"),
            vec!["can", "not", "login", "password", "salah"]
        );
        assert_eq!(
            super::words("brg x sampai"),
            vec!["barang", "tak", "sampai"]
        );
        assert!(is_stopword("the") && is_stopword("nak") && !is_stopword("refund"));
    }

    #[test]
    fn malay_and_indonesian_affixes_lead_to_the_root_group() {
        assert_eq!(concepts(&words("terbayar")), vec!["payment"]);
        assert_eq!(concepts(&words("pemulangan")), vec!["return"]);
        assert_eq!(concepts(&words("pembatalannya")), vec!["cancel"]);
        assert!(roots("pemulangan").contains(&"pulangan".to_string()));
        // English words and short words find nothing they should not.
        assert!(concepts(&words("believe the seasons mentioned")).is_empty());
        assert!(roots("tiba").is_empty());
    }

    /// The groups and the shorthand decide the vectors: a change must come
    /// with a new embedder version (`HashingEmbedder::name`) so that stored
    /// vectors are re-embedded instead of mixed with new ones. Raise the
    /// version in `local.rs`, then put the new fingerprint here.
    #[test]
    fn the_lexicon_is_pinned_to_the_embedder_version() {
        let mut text = String::new();
        for (concept, words) in GROUPS {
            text.push_str(concept);
            text.push_str(words);
        }
        for (short, long) in SHORTHAND {
            text.push_str(short);
            text.push_str(long);
        }
        text.push_str(&STOPWORDS.join(","));
        let fingerprint = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        let version = crate::platform::embed::Embedder::name(
            &crate::platform::embed::HashingEmbedder::new(64),
        );
        assert_eq!(
            (version.as_str(), fingerprint),
            ("local-hash-v3-64", 0xc488_2e6d_17c3_8763),
            "the lexicon changed: raise the embedder's version and update the fingerprint"
        );
    }

    #[test]
    fn every_entry_is_lower_case_and_at_most_two_words() {
        for (concept, words) in GROUPS {
            for entry in entries(words) {
                assert_eq!(*entry, entry.to_lowercase(), "{concept}: {entry}");
                assert!(entry.split(' ').count() <= 2, "{concept}: {entry}");
            }
        }
    }
}
