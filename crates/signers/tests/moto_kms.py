"""moto's KMS server, with Sign made to follow the AWS KMS API where moto 5.2
does not. Started by tests/kms.rs as `python3 moto_kms.py -H 127.0.0.1 -p PORT`.

Two deviations of moto (5.2.1, and up to 5.2.5 at the time of writing) from
https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html are mended
here, nothing else is touched:

1. MessageType=DIGEST is parsed and ignored: the digest is hashed again, so
   the signature is over H(H(m)) (getmoto/moto pull request #10202, open).
   Here a DIGEST message is signed as given (a pre-hashed signature), after
   the length check AWS makes ("Digest is invalid length for algorithm").
2. RSASSA_PSS_* signs with the largest salt; AWS KMS uses a salt as long as
   the hash (the JWS PS256/384/512 form, RFC 7518 section 3.5).

Set KEYWARD_MOTO_PLAIN=1 to run moto unchanged (a test shows what keyward
does with a KMS that signs the wrong thing).
"""

import os
import sys
import threading

from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from moto.kms import responses, utils
from moto.kms.exceptions import ValidationException
from moto.server import main

_request = threading.local()


def _digest_mode() -> bool:
    return getattr(_request, "digest", False)


def _check_digest(message: bytes, hash_algorithm, signing_algorithm: str) -> None:
    if len(message) != hash_algorithm.digest_size:
        raise ValidationException(
            f"Digest is invalid length for algorithm {signing_algorithm}."
        )


_original_response_sign = responses.KmsResponse.sign


def _response_sign(self):
    message_type = self._get_param("MessageType") or "RAW"
    if message_type not in ("RAW", "DIGEST"):
        raise ValidationException(
            f"1 validation error detected: Value '{message_type}' at 'messageType' "
            "failed to satisfy constraint: Member must satisfy enum value set: [RAW, DIGEST]"
        )
    _request.digest = message_type == "DIGEST"
    try:
        return _original_response_sign(self)
    finally:
        _request.digest = False


_original_rsa_padding = utils.RSAPrivateKey._RSAPrivateKey__padding_and_hash_algorithm


def _rsa_padding(self, signing_algorithm):
    pad, hash_algorithm = _original_rsa_padding(self, signing_algorithm)
    if isinstance(pad, padding.PSS):
        pad = padding.PSS(
            mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.DIGEST_LENGTH
        )
    return pad, hash_algorithm


def _rsa_sign(self, message: bytes, signing_algorithm: str) -> bytes:
    utils.validate_signing_algorithm(
        signing_algorithm, utils.SigningAlgorithm.rsa_signing_algorithms()
    )
    pad, hash_algorithm = _rsa_padding(self, signing_algorithm)
    if _digest_mode():
        _check_digest(message, hash_algorithm, signing_algorithm)
        return self.private_key.sign(message, pad, Prehashed(hash_algorithm))
    return self.private_key.sign(message, pad, hash_algorithm)


_original_ec_sign = utils.ECDSAPrivateKey.sign


def _ec_sign(self, message: bytes, signing_algorithm: str) -> bytes:
    if not _digest_mode():
        return _original_ec_sign(self, message, signing_algorithm)
    utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
    hash_algorithm = self._ECDSAPrivateKey__hash_algorithm(signing_algorithm)
    _check_digest(message, hash_algorithm, signing_algorithm)
    return self.private_key.sign(message, ec.ECDSA(Prehashed(hash_algorithm)))


if os.environ.get("KEYWARD_MOTO_PLAIN") != "1":
    responses.KmsResponse.sign = _response_sign
    utils.RSAPrivateKey._RSAPrivateKey__padding_and_hash_algorithm = _rsa_padding
    utils.RSAPrivateKey.sign = _rsa_sign
    utils.ECDSAPrivateKey.sign = _ec_sign

if __name__ == "__main__":
    main(sys.argv[1:])
