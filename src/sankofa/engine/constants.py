"""Magic numbers and key prefixes, in one place, each with its reason."""

from __future__ import annotations

from typing import Final

#: Transaction id: the idempotency key. Restricted so it is safe in URLs, logs and keys;
#: at least one letter or digit, so that "." and ".." (which URL paths collapse) are out.
TRANSACTION_ID_PATTERN: Final = r"^(?=.*[A-Za-z0-9])[A-Za-z0-9._:-]{1,64}$"
#: Customer, terminal and device identifiers: printable, bounded (they become Redis keys).
MAX_IDENTIFIER_CHARS: Final = 128
MAX_CHANNEL_CHARS: Final = 32
#: The largest amount accepted: 10^12 (numeric(15,2) holds it with room to spare).
MAX_AMOUNT_CENTS: Final = 10**14
MAX_METADATA_KEYS: Final = 32
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 512

TRANSACTION_TYPES: Final = ("card", "pix", "ted", "boleto")
DEFAULT_TYPE: Final = "card"
DEFAULT_CURRENCY: Final = "BRL"

#: ISO 4217 codes of currencies a payment can be made in: the active list,
#: without precious metals (XAU, XAG, XPD, XPT), bond units (XBA-XBD), the SDR
#: (XDR, XSU, XUA) and the testing / no-currency codes (XTS, XXX).
ISO_4217: Final = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV
    BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE
    CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD
    HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD
    KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV
    MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB
    RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF
    XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)

#: The model's thresholds give the first three (index = thresholds passed); a rule
#: may also ask for a step-up: extra authentication of the payer (sankofa.rules).
DECISIONS: Final = ("approve", "review", "decline", "step_up")
RISK_LEVELS: Final = ("LOW", "MEDIUM", "HIGH", "CRITICAL")

#: Reason code per model input, given when that input raised the score most.
FEATURE_REASON_CODES: Final = {
    "TX_AMOUNT": "AMOUNT",
    "TX_DURING_WEEKEND": "WEEKEND",
    "TX_DURING_NIGHT": "NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW": "CUSTOMER_TX_COUNT_1D",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW": "CUSTOMER_AVG_AMOUNT_1D",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW": "CUSTOMER_TX_COUNT_7D",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW": "CUSTOMER_AVG_AMOUNT_7D",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW": "CUSTOMER_TX_COUNT_30D",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW": "CUSTOMER_AVG_AMOUNT_30D",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW": "TERMINAL_TX_COUNT_1D",
    "TERMINAL_ID_RISK_1DAY_WINDOW": "TERMINAL_RISK_1D",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW": "TERMINAL_TX_COUNT_7D",
    "TERMINAL_ID_RISK_7DAY_WINDOW": "TERMINAL_RISK_7D",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW": "TERMINAL_TX_COUNT_30D",
    "TERMINAL_ID_RISK_30DAY_WINDOW": "TERMINAL_RISK_30D",
    # The terminal's known-label history (engine.terminal_history).
    "TERMINAL_ID_KNOWN_FRAUD_STREAK": "TERMINAL_KNOWN_FRAUD_STREAK",
    "TERMINAL_ID_KNOWN_FRAUD_STREAK_AGE_DAYS": "TERMINAL_FRAUD_STREAK_AGE",
    "TERMINAL_ID_LAST_KNOWN_LEGIT_AGE_DAYS": "TERMINAL_LAST_LEGIT_AGE",
    # Derived inputs of tree models (engine.derived_features): codes of their own,
    # since each says something none of its ingredients says alone.
    "AMOUNT_TO_CUSTOMER_AVG_1DAY": "AMOUNT_VS_CUSTOMER_AVG_1D",
    "AMOUNT_TO_CUSTOMER_AVG_7DAY": "AMOUNT_VS_CUSTOMER_AVG_7D",
    "AMOUNT_TO_CUSTOMER_AVG_30DAY": "AMOUNT_VS_CUSTOMER_AVG_30D",
    "CUSTOMER_AVG_1DAY_TO_30DAY": "CUSTOMER_SPENDING_SHIFT_1D",
    "CUSTOMER_AVG_7DAY_TO_30DAY": "CUSTOMER_SPENDING_SHIFT_7D",
    "CUSTOMER_TX_RATE_1DAY_TO_30DAY": "CUSTOMER_TX_RATE_SHIFT_1D",
    "CUSTOMER_TX_RATE_7DAY_TO_30DAY": "CUSTOMER_TX_RATE_SHIFT_7D",
    "AMOUNT_TO_CUSTOMER_AVG_BEFORE_TODAY": "AMOUNT_VS_CUSTOMER_HISTORY",
    "TERMINAL_ID_KNOWN_FRAUDS_1DAY_WINDOW": "TERMINAL_KNOWN_FRAUDS_1D",
    "TERMINAL_ID_KNOWN_FRAUDS_7DAY_WINDOW": "TERMINAL_KNOWN_FRAUDS_7D",
    "TERMINAL_ID_KNOWN_FRAUDS_30DAY_WINDOW": "TERMINAL_KNOWN_FRAUDS_30D",
}
#: No input raised the score by at least REASON_MIN_LOGIT.
REASON_NO_RISK_FACTOR: Final = "NO_STRONG_RISK_FACTOR"
#: A feature came out non-finite; it was replaced by its training mean.
REASON_FEATURE_FALLBACK: Final = "FEATURE_FALLBACK"
#: First of the reasons when the online history was unavailable or incomplete
#: (Redis down, or being rebuilt): the decision rests on degraded features.
REASON_FEATURES_DEGRADED: Final = "FEATURES_DEGRADED"
#: Smallest logit contribution worth naming as a reason, and how many to name.
REASON_MIN_LOGIT: Final = 0.1
REASON_MAX_CODES: Final = 3

# Redis keys (all under the configured prefix, e.g. "sk", and the layout version):
#   {prefix}:f2:c:{customer_ref}   string of 24-byte records (time, cents, id hash)
#   {prefix}:f2:t:{terminal_id}    string of 24-byte records (time, id hash, fraud label)
#: Bumped whenever the layout changes, so that a new version never reads keys
#: written by an old one (they expire on their own).
REDIS_LAYOUT: Final = "f2"
REDIS_CUSTOMER: Final = "c"
REDIS_TERMINAL: Final = "t"
#: Keep window members this long past the longest window, so late (out-of-order)
#: transactions still see their history.
FEATURE_TRIM_GRACE_S: Final = 2 * 86_400
