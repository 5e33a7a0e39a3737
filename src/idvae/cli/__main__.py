from idvae.cli import main

main()
