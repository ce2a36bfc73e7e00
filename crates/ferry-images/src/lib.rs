//! ferry-images: registry scanning, tag policies and format-preserving image write-back to git.
