//! Page-cache residency of files and mappings, as vmtouch reports it.
//! (Skeleton; being written.)
