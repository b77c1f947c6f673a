/* migrate.h — move a model's live compute state to another device (`to m "cuda"`, PyTorch's
 * model.to): the f32 weights as they are now (merged adapters, trained unfrozen weights
 * included), their gradients, every LoRA adapter and the optimizer state that points at them.
 *
 *   fw_move *mv = fw_move_new(fm, be_guard());   // NULL + lp_seterr on OOM
 *   if (fw_move_prepare(mv) < 0 ||               // the model's buffers and its train state
 *       to_move_copy(opt, mv) < 0) {             // ... and every optimizer over fm
 *       fw_move_abort(mv);                        // nothing changed: the model stays usable
 *       return -1;                                //   where it was (lp_geterr says why)
 *   }
 *   to_move_commit(opt, mv);                     // participants point at their copies first,
 *   fw_move_commit(mv);                          // then the model; the old buffers are freed
 *
 * Two phases, so that running out of memory on the new device changes nothing: prepare copies
 * every device buffer (fw_move_buf: allocate on the new device, copy through a host stage) while
 * the old ones stay in use; commit rewrites every pointer through fw_move_at (old address →
 * the copy's, at the same offset) and only then frees the old buffers. Activations (the arena,
 * backward scratch, LoRA h/mask) are not copied: they are dropped, so a backward of a forward
 * made before the move is an error ("no forward"), as for any forward output that is no longer
 * current. A pointer that commit meets but prepare did not copy is a broken invariant (assert).
 *
 * The train module hangs its state on the model (fw_train_slot) and moves it with the model
 * through the hook set by fw_set_train_move: called with commit = 0 to copy its buffers (may
 * fail), with commit = 1 to point at the copies (may not fail). */
#ifndef LOUPE_NN_MIGRATE_H
#define LOUPE_NN_MIGRATE_H
#include <stddef.h>

#include "backend/backend.h"
#include "nn/forward.h"

typedef struct fw_move fw_move;

/* A move of fm from its backend to `to` (a different backend). NULL + lp_seterr on OOM. */
fw_move *fw_move_new(fw_model *fm, const be_backend *to);

/* Copy the model's own device buffers (weights, gradient slots) and its train state to the new
 * device. -1 + lp_seterr (what could not be allocated); then call fw_move_abort. */
int fw_move_prepare(fw_move *mv);

/* Copy one device buffer of the old backend (`bytes` long, allocated by it) to the new device;
 * NULL or a buffer copied already is a no-op. -1 + lp_seterr on OOM. */
int fw_move_buf(fw_move *mv, const void *old, size_t bytes);

/* Where `old` (a pointer into a copied buffer, or NULL) is on the new device. */
void *fw_move_at(const fw_move *mv, const void *old);

const be_backend *fw_move_from(const fw_move *mv);
const be_backend *fw_move_to(const fw_move *mv);
fw_model *fw_move_model(const fw_move *mv);
/* Bytes copied so far. */
size_t fw_move_bytes(const fw_move *mv);

/* Point the model (and its train state) at the copies, drop its activations, free the old
 * buffers, make `to` the model's backend; frees mv. Other participants commit before. */
void fw_move_commit(fw_move *mv);

/* Free the copies; the model is untouched. Frees mv (NULL: no-op). */
void fw_move_abort(fw_move *mv);

/* The train module's hook (see above); state is *fw_train_slot(fm). 0 or -1 + lp_seterr. */
typedef int (*fw_train_move_fn)(fw_move *mv, fw_model *fm, void *state, int commit);
void fw_set_train_move(fw_model *fm, fw_train_move_fn fn);

#endif
