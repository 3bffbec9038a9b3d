# What tools/lazyconfig_train_net.py (Detectron2) and train_net.py read besides the model, data and optimizer.
train = dict(
    output_dir="./output",
    init_checkpoint="",  # MODEL.WEIGHTS: ImageNet backbone or a converted YOLACT checkpoint
    max_iter=800000,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=10000, max_to_keep=100),  # SOLVER.CHECKPOINT_PERIOD
    eval_period=0,  # TEST.EVAL_PERIOD (0: evaluate once, after the last iteration)
    log_period=20,
    device="cuda",  # MODEL.DEVICE
    seed=-1,  # SEED (-1: random)
)
