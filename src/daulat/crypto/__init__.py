"""age encryption: key files, recipients, and bounded-memory streaming encrypt/decrypt.

daulat encrypts objects with `age <https://age-encryption.org/v1>`_ (X25519 recipients) so that
no storage provider can read them. The customer holds the identity (secret key) file; daulat only
needs the public recipient string (``age1...``) to encrypt.

Key files
    :func:`new_identity` writes a standard age identity file (the format ``age-keygen`` writes, so
    ``age -d -i FILE`` reads it), created with mode 0600 and never overwriting.
    :func:`load_identities` reads such a file; :func:`recipient_of` gives its public key;
    :func:`parse_recipients` checks recipient strings.

Small objects
    :func:`encrypt_bytes` / :func:`decrypt_bytes` run inline: the X25519 exchange costs ~0.15 ms
    and the data ~1.8 ms per MiB, so they suit objects up to :data:`INLINE_LIMIT` (1 MiB).

Streams
    :func:`encrypt_stream` / :func:`decrypt_stream` turn an async iterable of chunks into an async
    iterator of chunks of at least ``chunk_size`` bytes (1 MiB; only the last one may be shorter),
    in memory bounded by ``max_buffer`` whatever the object size. pyrage has no incremental API,
    so each stream runs ``pyrage.encrypt_io``/``decrypt_io`` in its own worker thread between a
    reader fed from the event loop and a writer feeding it back, both through bounded queues:

    * back-pressure both ways: a slow consumer stops the worker, which stops pulling the source;
    * an exception from the source is re-raised to the consumer as is; crypto failures become
      :class:`EncryptError` / :class:`DecryptError` (never a pyrage exception);
    * when the consumer stops early (``aclose()``, ``break`` then garbage collection, task
      cancellation) the source is cancelled and closed, and the worker thread ends.

    pyrage holds the GIL while it computes (it reads and writes in 8 KiB / 64 KiB pieces), so the
    event loop keeps running between pieces (measured: loop stalls of at most ~5 ms, the GIL
    switch interval) but all streams of a process share one core's worth of GIL time
    (400-650 MB/s per stream and ~750 MB/s for four concurrent streams on the development
    machine).

    Decryption is authenticated per 64 KiB chunk: every chunk yielded has been verified, but a
    truncated or tampered object only fails when the damage is reached. Treat decrypted output as
    valid only once the iterator has finished without raising.

Sizes
    There is no ``encrypted_size(plaintext_size)``: the ciphertext size is not a function of the
    plaintext size alone, because the age implementation in pyrage (rage) adds a random "grease"
    stanza to every header, so headers vary (about 190 to 320 bytes for one recipient). The
    payload after the header is exact: :func:`payload_size` (and its inverse
    :func:`plaintext_size`). Once the first output chunk exists (with the default chunk size it
    contains the whole header), ``header_size(first_chunk) + payload_size(n)`` is the exact
    total.

Secrets
    No message, ``repr`` or ``str`` produced here contains secret key text: :class:`Identity`
    redacts itself, and key-file errors name the file and line, never its content.

Where the code is
    :mod:`daulat.crypto.keys` (recipients, identities, key files), :mod:`daulat.crypto.inline`
    (small objects), :mod:`daulat.crypto.stream` (streams), :mod:`daulat.crypto.sizes` (the
    format's sizes) and :mod:`daulat.crypto.errors` (the errors, and how pyrage's become
    them). Import what they hold from here: ``from daulat.crypto import ...``.
"""

from __future__ import annotations

from daulat.crypto.errors import (
    NO_MATCHING_IDENTITY,
    CryptoError,
    DecryptError,
    EncryptError,
    KeyFileError,
    RecipientError,
)
from daulat.crypto.inline import INLINE_LIMIT, decrypt_bytes, encrypt_bytes
from daulat.crypto.keys import (
    Identity,
    Recipient,
    load_identities,
    new_identity,
    parse_recipient,
    parse_recipients,
    recipient_of,
)
from daulat.crypto.keys import fsync_directory as fsync_directory
from daulat.crypto.sizes import (
    AGE_CHUNK_SIZE,
    AGE_MAGIC,
    header_size,
    payload_size,
    plaintext_size,
)
from daulat.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BUFFER,
    AgeStream,
    decrypt_stream,
    encrypt_stream,
)

__all__ = [
    "AGE_CHUNK_SIZE",
    "AGE_MAGIC",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BUFFER",
    "INLINE_LIMIT",
    "NO_MATCHING_IDENTITY",
    "AgeStream",
    "CryptoError",
    "DecryptError",
    "EncryptError",
    "Identity",
    "KeyFileError",
    "Recipient",
    "RecipientError",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "header_size",
    "load_identities",
    "new_identity",
    "parse_recipient",
    "parse_recipients",
    "payload_size",
    "plaintext_size",
    "recipient_of",
]
