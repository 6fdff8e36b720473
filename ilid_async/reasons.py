"""Every reason an item (sitemap, page, record, image) can be rejected or fail with: the words
the store records, `status` counts and the summary prints. One vocabulary, so that a report can
be read and grouped, and a typo cannot invent a new reason (tests/test_architecture.py checks
that no module writes a reason as a bare string). Rejected = a rule of docs/rules.md said no;
failed = something went wrong (see errors.py)."""

from __future__ import annotations

__all__ = [
    # fetching (http.py, sitemap.py, the stages)
    "BAD_URL", "ADDRESS_REFUSED", "DNS_ERROR", "TIMEOUT", "CONNECTION_ERROR", "TOO_LARGE",
    "REDIRECT_LOOP", "BAD_REDIRECT", "TOO_MANY_REDIRECTS", "ROBOTS_DISALLOWED", "OFF_DOMAIN",
    "http_status", "RETRIED_ON",
    # sitemaps
    "MALFORMED_SITEMAP", "TOO_LARGE_MARKUP", "TOO_MANY_NAMES", "TOO_MANY_ELEMENTS", "TOO_NESTED",
    "TOO_DEEP", "TOO_MANY_SITEMAPS", "SITEMAP_REFUSALS",
    # pages
    "NOT_PRODUCT_PAGE", "NO_IMAGE", "UNDECODABLE_PAGE", "PAGE_TIME_BUDGET", "EXTRACTION_ERROR",
    "WORKER_DIED",
    # filters
    "DUPLICATE_IMAGE_URL", "EMPTY_LABEL", "EMPTY_DATA", "PREFILTER",
    "MISSING_LABEL_SHORT", "MISSING_LABEL_LONG", "UNSAFE_FOLDER", "POSTFILTER", "ungrounded", "DUPLICATE_IN_DATASET",
    # labelling
    "EMPTY_ANSWER", "CONTEXT_OVERFLOW", "engine_error", "SERVER_UNAVAILABLE", "SERVER_BAD_ANSWER",
    "server_http", "LABEL_RETRY",
    # images
    "NOT_IMAGE_CONTENT_TYPE", "NOT_AN_IMAGE", "TRUNCATED_IMAGE", "EMPTY_IMAGE", "TOO_MANY_PIXELS",
    "UNSUPPORTED_MODE", "UNSAFE_PATH", "NAME_TOO_LONG", "FOLDER_IS_A_FILE", "FILE_IS_A_FOLDER",
    "WRITE_NOT_PERMITTED", "WRITE_ERROR", "DISK_FULL",
]

# --- fetching ----------------------------------------------------------------------------------
BAD_URL = "bad_url"  # not an http(s) URL with a host, or one no URL parser takes
ADDRESS_REFUSED = "address_refused"  # resolves to an address the config does not allow (http.allow_*)
DNS_ERROR = "dns_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TOO_LARGE = "too_large"  # a body over its cap (pages, sitemaps, images)
REDIRECT_LOOP = "redirect_loop"
BAD_REDIRECT = "bad_redirect"  # a redirect without Location
TOO_MANY_REDIRECTS = "too_many_redirects"
ROBOTS_DISALLOWED = "robots_disallowed"
OFF_DOMAIN = "off_domain"  # a sitemap or page whose host is not on the shop's allowed_domains
RETRIED_ON = (TIMEOUT, CONNECTION_ERROR)  # failures http.py tries again before giving up


def http_status(status: int) -> str:
    """A final answer other than 200: ``http_404``, ``http_503`` (after the retries)."""
    return f"http_{status}"


# --- sitemaps ------------------------------------------------------------------------------------
MALFORMED_SITEMAP = "malformed_sitemap"
TOO_LARGE_MARKUP = "too_large_markup"  # an element left open over the markup cap
TOO_MANY_NAMES = "too_many_names"
TOO_MANY_ELEMENTS = "too_many_elements"
TOO_NESTED = "too_nested"
TOO_DEEP = "too_deep"  # more index levels down than http.max_sitemap_depth
TOO_MANY_SITEMAPS = "too_many_sitemaps"  # the shop has http.max_sitemaps in this pass already
SITEMAP_REFUSALS = (OFF_DOMAIN, TOO_DEEP, TOO_MANY_SITEMAPS)  # recorded without a fetch

# --- pages ---------------------------------------------------------------------------------------
NOT_PRODUCT_PAGE = "not_product_page"  # the shop's selectors find no product (rules §1)
NO_IMAGE = "no_image"
UNDECODABLE_PAGE = "undecodable_page"
PAGE_TIME_BUDGET = "page_time_budget"  # extraction ran over its time budget
EXTRACTION_ERROR = "extraction_error"  # extraction raised: a bug or a parser crash, logged
WORKER_DIED = "worker_died"  # the process working on it died every time it was tried

# --- filters (rules §2, §4, §5) ------------------------------------------------------------------
DUPLICATE_IMAGE_URL = "duplicate_image_url"  # pre-filter rule 1, enforced by the store
EMPTY_LABEL = "empty_label"
EMPTY_DATA = "empty_data"
PREFILTER = (EMPTY_LABEL, EMPTY_DATA)  # per record; rule 1 is a batch rule
MISSING_LABEL_SHORT = "missing_label_short"
MISSING_LABEL_LONG = "missing_label_long"
UNSAFE_FOLDER = "unsafe_folder"
POSTFILTER = (MISSING_LABEL_SHORT, MISSING_LABEL_LONG, UNSAFE_FOLDER)


def ungrounded(field: str) -> str:
    """Post-filter: the field (in filters.reject_ungrounded) has a word the page does not."""
    return f"ungrounded_{field}"


DUPLICATE_IN_DATASET = "duplicate_in_dataset"  # assemble: the image URL is in the dataset already

# --- labelling -----------------------------------------------------------------------------------
EMPTY_ANSWER = "empty_answer"
CONTEXT_OVERFLOW = "context_overflow"  # the prompt does not fit llm.n_ctx even without page text
SERVER_UNAVAILABLE = "server_unavailable"  # every retry failed: labelled again by the next run
SERVER_BAD_ANSWER = "server_bad_answer"  # not the JSON a completions endpoint answers
LABEL_RETRY = (SERVER_UNAVAILABLE,)  # failed labels a new run sends again


def engine_error(e: BaseException) -> str:
    """llama.cpp raised while labelling: the exception's type names it."""
    return f"engine_error: {type(e).__name__}"


def server_http(status: int) -> str:
    """A labelling server's final answer other than 200."""
    return f"server_http_{status}"


# --- images --------------------------------------------------------------------------------------
NOT_IMAGE_CONTENT_TYPE = "not_image_content_type"
NOT_AN_IMAGE = "not_an_image"  # no decoder takes the bytes
TRUNCATED_IMAGE = "truncated_image"
EMPTY_IMAGE = "empty_image"  # 0 pixels wide or high
TOO_MANY_PIXELS = "too_many_pixels"  # over images.max_pixels (a decompression bomb)
UNSUPPORTED_MODE = "unsupported_mode"
UNSAFE_PATH = "unsafe_path"  # an image path that would leave the images folder
NAME_TOO_LONG = "name_too_long"
FOLDER_IS_A_FILE = "folder_is_a_file"  # a file where the image's folder should be
FILE_IS_A_FOLDER = "file_is_a_folder"  # a folder where the image file should be
WRITE_NOT_PERMITTED = "write_not_permitted"
WRITE_ERROR = "write_error"  # any other OSError while writing
DISK_FULL = "disk_full"  # never stored: the run stops instead (the disk is the run's)
