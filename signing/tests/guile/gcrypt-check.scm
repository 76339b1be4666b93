;;; gcrypt-check.scm -- Guix's signing and checking of narinfos, done by libgcrypt.
;;;
;;; The signing crate's tests run this with Debian's guile-3.0 and guile-gcrypt so that an
;;; implementation nobody here wrote (libgcrypt, through guile-gcrypt) checks our signatures
;;; and makes signatures for us to check.  The narinfo handling mirrors Guix: guix/narinfo.scm
;;; (`narinfo-sha256', `narinfo-signature->canonical-sexp'), guix/records.scm
;;; (`recutils->alist'), guix/pki.scm (`signature-sexp', `signature-case') and
;;; guix/scripts/publish.scm (`signed-string', `narinfo-string'); all cryptography and sexp
;;; handling is libgcrypt's.
;;;
;;; Usage:
;;;   guile --no-auto-compile gcrypt-check.scm verify PUB NARINFO...
;;;       Prints one line per NARINFO: "valid" or "invalid <reason>".
;;;   guile --no-auto-compile gcrypt-check.scm genkey SEC PUB
;;;       Writes a new key pair as `guix archive --generate-key' does.
;;;   guile --no-auto-compile gcrypt-check.scm sign SEC PUB HOST TEXT NARINFO [TEXT NARINFO]...
;;;       For each TEXT file (the StorePath...Deriver lines), writes NARINFO: the text, its
;;;       Signature line as guix publish makes it, and a URL/Compression pair.

(use-modules (gcrypt pk-crypto)
             (gcrypt hash)
             (gcrypt base64)
             (rnrs bytevectors)
             (rnrs io ports)
             (ice-9 match)
             (srfi srfi-1))

(define (read-text file)
  (call-with-input-file file get-string-all #:encoding "UTF-8"))

(define (write-text file text)
  (call-with-output-file file (lambda (port) (display text port)) #:encoding "UTF-8"))

(define (read-file-sexp file)
  (string->canonical-sexp (read-text file)))

;;; guix/records.scm
(define %recutils-field-charset
  (char-set-union char-set:upper-case char-set:lower-case (char-set #\%)))

(define (recutils->alist port)
  (let loop ((line (get-line port)) (result '()))
    (cond ((eof-object? line) (reverse result))
          ((string-null? line)
           (if (null? result) (loop (get-line port) result) (reverse result)))
          (else
           (let ((first (string-ref line 0)))
             (cond
              ((char-set-contains? %recutils-field-charset first)
               (let* ((colon (string-index line #\:))
                      (field (string-take line colon))
                      (value (string-trim (string-drop line (+ 1 colon)))))
                 (loop (get-line port) (alist-cons field value result))))
              ((eqv? first #\#) (loop (get-line port) result))
              ((eqv? first #\+)
               (let ((new-line (if (string-prefix? "+ " line) (string-drop line 2) (string-drop line 1))))
                 (match result
                   (((field . value) rest ...)
                    (loop (get-line port) `((,field . ,(string-append value "\n" new-line)) ,@rest))))))
              (else (error "unmatched line" line))))))))

;;; guix/narinfo.scm
(define (narinfo-sha256 contents)
  (match (string-contains contents "Signature:")
    (#f #f)
    (index
     (let* ((above (string-take contents index))
            (fields (map car (call-with-input-string above recutils->alist))))
       (and (every (lambda (field) (member field fields)) '("StorePath" "NarHash" "References"))
            (sha256 (string->utf8 above)))))))

(define (narinfo-signature->canonical-sexp str)
  (match (string-split str #\;)
    ((version host-name sig)
     (unless (equal? (string->number version) 1)
       (error "unsupported signature version" version))
     (string->canonical-sexp (utf8->string (base64-decode sig))))
    (_ (error "invalid format of the signature field"))))

;;; guix/pki.scm `signature-case', against a one-key ACL.
(define (check-narinfo contents acl-key)
  (let ((hash (narinfo-sha256 contents))
        (field (assoc-ref (call-with-input-string contents recutils->alist) "Signature")))
    (if (not (and hash field))
        "invalid unsigned"
        (let* ((sig (narinfo-signature->canonical-sexp field))
               (data (find-sexp-token sig 'data))
               (subject (find-sexp-token sig 'public-key)))
          (cond ((not (and data subject)) "invalid corrupt-signature")
                ((not (equal? (canonical-sexp->sexp subject) (canonical-sexp->sexp acl-key)))
                 "invalid unauthorized-key")
                ((not (equal? (hash-data->bytevector data) hash)) "invalid hash-mismatch")
                ((verify (find-sexp-token sig 'sig-val) data subject) "valid")
                (else "invalid bad-signature"))))))

(define (verify-command pub-file narinfo-files)
  (let ((acl-key (read-file-sexp pub-file)))
    (for-each (lambda (file)
                (display (catch #t
                           (lambda () (check-narinfo (read-text file) acl-key))
                           (lambda (key . args) (format #f "invalid error ~a" key))))
                (newline))
              narinfo-files)))

;;; guix/scripts/archive.scm `generate-key-pair' with its default parameters.
(define (genkey-command sec-file pub-file)
  (let* ((pair (generate-key (string->canonical-sexp "(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")))
         (public (find-sexp-token pair 'public-key))
         (secret (find-sexp-token pair 'private-key)))
    (write-text pub-file (canonical-sexp->string public))
    (write-text sec-file (canonical-sexp->string secret))))

;;; guix/pki.scm `signature-sexp' and guix/scripts/publish.scm `signed-string'.
(define (signature-sexp data secret-key public-key)
  (string->canonical-sexp
   (format #f "(signature ~a ~a ~a)"
           (canonical-sexp->string data)
           (canonical-sexp->string (sign data secret-key))
           (canonical-sexp->string public-key))))

(define (signed-string text secret-key public-key)
  (let ((hash (bytevector->hash-data (sha256 (string->utf8 text)) #:key-type (key-type public-key))))
    (signature-sexp hash secret-key public-key)))

(define (sign-command sec-file pub-file host pairs)
  (let ((secret (read-file-sexp sec-file))
        (public (read-file-sexp pub-file)))
    (let loop ((pairs pairs))
      (match pairs
        (() #t)
        ((text-file narinfo-file rest ...)
         (let* ((info (read-text text-file))
                (signature (base64-encode (string->utf8 (canonical-sexp->string
                                                         (signed-string info secret public))))))
           (write-text narinfo-file
                       (format #f "~aSignature: 1;~a;~a~%URL: nar/gzip/x~%Compression: gzip~%"
                               info host signature))
           (loop rest)))))))

(match (cdr (program-arguments))
  (("verify" pub narinfos ...) (verify-command pub narinfos))
  (("genkey" sec pub) (genkey-command sec pub))
  (("sign" sec pub host pairs ...) (sign-command sec pub host pairs))
  (args (format (current-error-port) "gcrypt-check.scm: bad arguments ~s~%" args) (exit 2)))
